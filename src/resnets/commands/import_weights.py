"""`resnets import`: torchvision, timm or akamaster ResNet weights as a resnets checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..models import count_params


def register(sub) -> None:
    p = sub.add_parser(
        "import", help="turn torchvision / timm / akamaster ResNet weights into a resnets "
                       "checkpoint",
        description="Write a resnets checkpoint (kind 'weights') from torchvision's published "
                    "weights (torchvision:resnet50, torchvision:resnet50.IMAGENET1K_V1; "
                    "downloaded into torch.hub's cache) or a local state dict (.pth read "
                    "with weights_only, or .safetensors). The checkpoint records the eval "
                    "preprocessing, so `resnets predict` and `resnets export` use it as is. "
                    "A --num-classes other than the weights' drops the classifier (fc) for "
                    "fine-tuning, with a warning. --from akamaster reads the CIFAR ResNets "
                    "of akamaster/pytorch_resnet_cifar10 (resnet20.th ...; option A, ImageNet "
                    "channel mean/std) into the registered resnetN with the same logits.")
    p.add_argument("--weights", required=True, metavar="torchvision:MODEL[.TAG]|PATH")
    p.add_argument("--out", required=True, help="the .safetensors checkpoint to write")
    p.add_argument("--from", dest="library", choices=["torchvision", "timm", "akamaster"],
                   default="torchvision",
                   help="layout and default preprocessing of a local file (timm also reads a "
                        "config.json beside it; akamaster: a CIFAR .th file)")
    p.add_argument("--model", default=None,
                   help="resnets model name (default: inferred from the weights)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the weights')")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="text file with one class name per line (default: the weights' "
                        "categories; ImageNet-1k for 1000 outputs)")
    g = p.add_argument_group("preprocessing overrides (default: the weights' eval transform)")
    g.add_argument("--resize", type=int, default=None, help="shorter side before the crop")
    g.add_argument("--crop", type=int, default=None, help="center crop = network input size")
    g.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"], default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    # The importers load torchvision (about a second): only `resnets import` pays for it,
    # not the parser that every command builds.
    from ..serve.from_akamaster import import_akamaster
    from ..serve.from_timm import import_timm
    from ..serve.from_torchvision import import_torchvision
    from ..serve.weights import TORCHVISION_PREFIX

    if Path(args.out).suffix != ".safetensors":  # checked before a long download
        raise UserError(f"--out {args.out}: resnets checkpoints are .safetensors files; name "
                        f"the output e.g. {Path(args.out).with_suffix('.safetensors')}.")
    classes = None
    if args.classes:
        try:
            classes = [line.strip() for line in Path(args.classes).read_text().splitlines()
                       if line.strip()]
        except OSError as e:
            raise UserError(f"--classes {args.classes}: cannot read it ({e}).") from None
        except UnicodeDecodeError as e:
            raise UserError(f"--classes {args.classes} is not UTF-8 text ({e.reason} at byte "
                            f"{e.start}): save it as UTF-8, one class name per line (e.g. "
                            f"iconv -f latin1 -t utf-8).") from None
    if args.library == "timm" and args.weights.startswith(TORCHVISION_PREFIX):
        raise UserError("--from timm takes a local file; torchvision:MODEL specs are "
                        "torchvision's weights (leave --from out).")
    if args.library == "akamaster":
        if args.weights.startswith(TORCHVISION_PREFIX):
            raise UserError("--from akamaster takes a local .th file (e.g. resnet20.th of "
                            "akamaster/pytorch_resnet_cifar10).")
        given = [f"--{k}" for k in ("resize", "crop", "interpolation")
                 if getattr(args, k) is not None]
        if given:
            raise UserError(f"{', '.join(given)}: akamaster's CIFAR nets take the whole 32x32 "
                            f"image, with no resize or crop; leave these out.")
        imported = import_akamaster(args.weights, model=args.model,
                                    num_classes=args.num_classes, classes=classes)
    else:
        fn = import_timm if args.library == "timm" else import_torchvision
        imported = fn(args.weights, model=args.model, num_classes=args.num_classes,
                      classes=classes, resize=args.resize, crop=args.crop,
                      interpolation=args.interpolation)
    path = imported.save(args.out)
    meta = imported.meta
    norm = meta["normalization"]
    print(f"wrote {path}: {meta['model']} ({count_params(imported.model) / 1e6:.2f}M params, "
          f"{len(meta['classes'])} classes) from {meta['source'].get('name') or args.weights}")
    pre = meta.get("preprocessing")
    resize = (f"resize {pre['resize']}, center crop {pre['crop']}, {pre['interpolation']}"
              if pre else f"whole image at {meta['image_size'][-1]}x{meta['image_size'][-1]}")
    print(f"preprocessing: {resize}, mean {norm['mean']}, std {norm['std']}")
    if imported.dropped:
        print(f"classifier dropped ({', '.join(imported.dropped)}): fine-tune before use")
    return 0
