"""`resnets import --classes FILE`: a class list that is not UTF-8 text is named with the fix."""

from resnets.cli import main


def test_non_utf8_classes_file_is_named_with_the_fix(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"cat\nd\xf6g\n")  # Latin-1, not UTF-8
    code = main(["import", "--weights", str(tmp_path / "w.pth"), "--out",
                 str(tmp_path / "w.safetensors"), "--classes", str(classes)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"--classes {classes} is not UTF-8 text" in err
    assert "byte 5" in err and "save it as UTF-8" in err
