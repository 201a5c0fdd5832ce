"""Unit tests of mount-option validation (s3mpfs.config): every mistake a user can make
is a ConfigError that names the option, and secrets never leak into messages."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import botocore.session
import pytest

from s3mpfs.config import (
    ConfigError,
    GiB,
    KiB,
    MiB,
    MountConfig,
    TiB,
    build_config,
    parse_size,
    parse_target,
    read_sse_c_key,
)

KEY = bytes(range(100, 132))  # 32 bytes, recognisable in any encoding
KEY_FORMS = [repr(KEY), KEY.hex(), base64.b64encode(KEY).decode(), KEY.decode("latin-1")]


@pytest.fixture
def mnt(tmp_path: Path) -> str:
    path = tmp_path / "mnt"
    path.mkdir()
    return str(path)


def config(mnt: str, *options: str, target: str = "my-bucket") -> MountConfig:
    return build_config(target, mnt, list(options))


def config_error(mnt: str, *options: str, target: str = "my-bucket") -> str:
    """The message of the ConfigError these options give."""
    with pytest.raises(ConfigError) as info:
        config(mnt, *options, target=target)
    assert info.value.errno == errno.EINVAL
    return str(info.value)


def key_file(tmp_path: Path, content: bytes, mode: int = 0o600, name: str = "key") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


def b64_json(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


# -------------------------------------------------------------------- defaults and sizes


def test_no_options_give_the_defaults(mnt: str) -> None:
    cfg = config(mnt)
    assert (cfg.bucket, cfg.prefix, cfg.mountpoint) == ("my-bucket", "", os.path.abspath(mnt))
    assert (cfg.part_size, cfg.upload_concurrency, cfg.memory_limit) == (8 * MiB, 4, 64 * MiB)
    assert cfg.sse is None and cfg.sse_c_key is None and cfg.storage_class is None
    assert cfg.fuse_options == () and not cfg.read_only


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("5242880", 5 * MiB),
        ("512K", 512 * KiB),
        ("512k", 512 * KiB),
        ("8M", 8 * MiB),
        ("8m", 8 * MiB),
        ("16MiB", 16 * MiB),
        ("16MB", 16 * MiB),
        ("1G", GiB),
        ("5g", 5 * GiB),
        ("2T", 2 * TiB),
        (" 8M ", 8 * MiB),
    ],
)
def test_sizes_take_binary_suffixes(text: str, size: int) -> None:
    assert parse_size(text, "part_size") == size


@pytest.mark.parametrize("text", ["", "M", "8X", "-5M", "1.5G", "8 M", "8MM", "eight"])
def test_a_malformed_size_names_its_option(text: str) -> None:
    with pytest.raises(ConfigError, match="read_ahead"):
        parse_size(text, "read_ahead")


@pytest.mark.parametrize(("text", "size"), [("5M", 5 * MiB), ("16M", 16 * MiB), ("5G", 5 * GiB)])
def test_part_size_within_s3_limits_is_accepted(mnt: str, text: str, size: int) -> None:
    assert config(mnt, f"part_size={text},memory_limit=6G").part_size == size


@pytest.mark.parametrize("text", ["4M", "5119K", "6G", "5121M", "0"])
def test_part_size_out_of_range_names_the_option(mnt: str, text: str) -> None:
    message = config_error(mnt, f"part_size={text}")
    assert "part_size" in message
    assert "5M..5G" in message


@pytest.mark.parametrize("text", ["big", "8X", "8.5M", "-8M"])
def test_malformed_part_size_names_the_option(mnt: str, text: str) -> None:
    assert "part_size" in config_error(mnt, f"part_size={text}")


def test_memory_limit_below_the_part_size_is_refused(mnt: str) -> None:
    assert "memory_limit" in config_error(mnt, "part_size=32M,memory_limit=16M")
    assert "memory_limit" in config_error(mnt, "memory_limit=1M")


@pytest.mark.parametrize("value", ["0", "65", "-1", "many", "2.5"])
def test_upload_concurrency_out_of_range_or_malformed(mnt: str, value: str) -> None:
    assert "upload_concurrency" in config_error(mnt, f"upload_concurrency={value}")


def test_upload_concurrency_in_range(mnt: str) -> None:
    assert config(mnt, "upload_concurrency=1").upload_concurrency == 1
    assert config(mnt, "upload_concurrency=64").upload_concurrency == 64


def test_stat_index_is_on_unless_turned_off(mnt: str) -> None:
    assert config(mnt).stat_index is True
    assert config(mnt, "stat_index=yes").stat_index is True
    assert config(mnt, "stat_index=No").stat_index is False
    assert "stat_index" in config_error(mnt, "stat_index=maybe")


# -------------------------------------------------------------------- option syntax


@pytest.mark.parametrize("option", ["bogus=1", "bogus", "partsize=8M"])
def test_an_unknown_option_is_named(mnt: str, option: str) -> None:
    name = option.partition("=")[0]
    message = config_error(mnt, option)
    assert "unknown option" in message
    assert repr(name) in message


@pytest.mark.parametrize("name", ["part_size", "sse", "storage_class", "endpoint_url",
                                  "sse_c_key_file", "upload_concurrency"])
@pytest.mark.parametrize("form", ["{}", "{}="])
def test_an_option_missing_its_value_is_named(mnt: str, name: str, form: str) -> None:
    message = config_error(mnt, form.format(name))
    assert name in message
    assert "needs a value" in message


def test_options_may_come_in_several_groups_and_with_blanks(mnt: str) -> None:
    cfg = build_config("my-bucket", mnt, ["part_size=16M, upload_concurrency=8", ",,acl=private"])
    assert (cfg.part_size, cfg.upload_concurrency, cfg.acl) == (16 * MiB, 8, "private")


# -------------------------------------------------------------------- encryption


@pytest.mark.parametrize("sse", ["AES256", "aws:kms", "aws:kms:dsse"])
def test_valid_sse_modes(mnt: str, sse: str) -> None:
    assert config(mnt, f"sse={sse}").sse == sse


@pytest.mark.parametrize("sse", ["AES", "kms", "aws:kms:xyz", "none"])
def test_a_bad_sse_value_names_the_option_and_the_choices(mnt: str, sse: str) -> None:
    message = config_error(mnt, f"sse={sse}")
    assert message.startswith("sse=")
    assert "AES256" in message and "aws:kms" in message


@pytest.mark.parametrize("sse", [None, "AES256"])
def test_kms_key_id_needs_kms(mnt: str, sse: str | None) -> None:
    options = ["sse_kms_key_id=alias/backup"] + ([f"sse={sse}"] if sse else [])
    assert "sse_kms_key_id" in config_error(mnt, *options)


@pytest.mark.parametrize("sse", ["aws:kms", "aws:kms:dsse"])
def test_kms_key_id_and_context_with_kms(mnt: str, sse: str) -> None:
    context = b64_json({"project": "backup"})
    cfg = config(mnt, f"sse={sse},sse_kms_key_id=alias/backup,sse_kms_context={context}")
    assert (cfg.sse_kms_key_id, cfg.sse_kms_context) == ("alias/backup", context)


@pytest.mark.parametrize(
    "context",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        b64_json(["a", "list"]),
        b64_json("a string"),
        base64.b64encode(b"\xff\xfe").decode(),
    ],
    ids=["not-base64", "not-json", "json-list", "json-string", "not-utf8"],
)
def test_kms_context_must_be_base64_of_a_json_object(mnt: str, context: str) -> None:
    message = config_error(mnt, f"sse=aws:kms,sse_kms_context={context}")
    assert "sse_kms_context" in message


def test_kms_context_without_kms_is_refused(mnt: str) -> None:
    assert "sse_kms_context" in config_error(mnt, f"sse_kms_context={b64_json({'a': 'b'})}")


def test_bucket_key_needs_sse_kms(mnt: str) -> None:
    assert config(mnt, "sse=aws:kms,bucket_key").bucket_key is True
    for options in (["bucket_key"], ["sse=AES256,bucket_key"], ["sse=aws:kms:dsse,bucket_key"]):
        assert "bucket_key" in config_error(mnt, *options)


def test_a_flag_given_a_value_is_refused(mnt: str) -> None:
    assert "bucket_key" in config_error(mnt, "sse=aws:kms,bucket_key=maybe")


# -------------------------------------------------------------------- SSE-C key files


def test_sse_c_key_file_with_32_raw_bytes(mnt: str, tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY)
    assert read_sse_c_key(path) == KEY
    assert config(mnt, f"sse_c_key_file={path}").sse_c_key == KEY


@pytest.mark.parametrize("trailer", [b"", b"\n"])
def test_sse_c_key_file_with_base64_of_32_bytes(tmp_path: Path, trailer: bytes) -> None:
    path = key_file(tmp_path, base64.b64encode(KEY) + trailer)
    assert read_sse_c_key(path) == KEY


@pytest.mark.parametrize(
    "content",
    [KEY[:31], KEY + b"!", base64.b64encode(KEY[:31]), b"", b"x" * 44],
    ids=["31-raw", "33-raw", "base64-of-31", "empty", "44-not-base64"],
)
def test_sse_c_key_of_the_wrong_length_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ConfigError, match="sse_c_key_file") as info:
        read_sse_c_key(key_file(tmp_path, content))
    assert "32-byte" in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_sse_c_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, KEY, mode)
    with pytest.raises(ConfigError) as info:
        read_sse_c_key(path)
    message = str(info.value)
    assert "sse_c_key_file" in message
    assert f"chmod 600 {path}" in message


def test_sse_c_key_file_mode_400_is_accepted(tmp_path: Path) -> None:
    assert read_sse_c_key(key_file(tmp_path, KEY, 0o400)) == KEY


def test_a_missing_sse_c_key_file_is_refused(mnt: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    message = config_error(mnt, f"sse_c_key_file={missing}")
    assert "sse_c_key_file" in message
    assert str(missing) in message


def test_sse_c_key_file_cannot_be_combined_with_sse(mnt: str, tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY)
    message = config_error(mnt, f"sse_c_key_file={path},sse=AES256")
    assert "sse_c_key_file" in message and "sse=" in message


def test_the_sse_c_key_never_appears_in_repr_or_str(mnt: str, tmp_path: Path) -> None:
    cfg = config(mnt, f"sse_c_key_file={key_file(tmp_path, KEY)}")
    assert cfg.sse_c_key == KEY
    for text in (repr(cfg), str(cfg)):
        for form in KEY_FORMS:
            assert form not in text


def test_the_sse_c_key_never_appears_in_error_messages(mnt: str, tmp_path: Path) -> None:
    cases = [
        (KEY, 0o600, ",sse=AES256"),  # combined with sse=
        (KEY, 0o644, ""),  # readable by others
        (KEY + b"!", 0o600, ""),  # 33 bytes
        (KEY[:31], 0o600, ""),  # 31 bytes
        (base64.b64encode(KEY) + b"==", 0o600, ""),  # bad base64 padding
        (KEY, 0o600, ",part_size=6M,memory_limit=5M"),  # an unrelated error after reading it
    ]
    for i, (content, mode, more) in enumerate(cases):
        path = key_file(tmp_path, content, mode, name=f"key{i}")
        message = config_error(mnt, f"sse_c_key_file={path}{more}")
        for form in [*KEY_FORMS, repr(KEY[:31]), KEY[:31].hex()]:
            assert form not in message, message


# -------------------------------------------------------------------- storage class, acl


def test_storage_class_is_case_insensitive(mnt: str) -> None:
    assert config(mnt, "storage_class=standard_ia").storage_class == "STANDARD_IA"
    assert config(mnt, "storage_class=Glacier_IR").storage_class == "GLACIER_IR"


def botocore_enum(member: str) -> list[str]:
    model = botocore.session.get_session().get_service_model("s3")
    return list(model.operation_model("CreateMultipartUpload").input_shape.members[member].enum)


@pytest.mark.parametrize("storage_class", botocore_enum("StorageClass"))
def test_every_storage_class_s3_accepts_is_accepted(mnt: str, storage_class: str) -> None:
    assert config(mnt, f"storage_class={storage_class}").storage_class == storage_class
    assert config(mnt, f"storage_class={storage_class.lower()}").storage_class == storage_class


def test_a_bogus_storage_class_names_the_option_and_the_choices(mnt: str) -> None:
    message = config_error(mnt, "storage_class=bogus")
    assert message.startswith("storage_class=")
    assert "STANDARD_IA" in message


def test_canned_acls(mnt: str) -> None:
    assert config(mnt, "acl=BUCKET-OWNER-FULL-CONTROL").acl == "bucket-owner-full-control"
    assert "acl" in config_error(mnt, "acl=everyone")


# -------------------------------------------------------------------- mount point, FUSE


def test_a_missing_mount_point_suggests_mkdir(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError) as info:
        build_config("my-bucket", missing, [])
    assert missing in str(info.value)
    assert f"mkdir -p {missing}" in str(info.value)


def test_a_file_is_not_a_mount_point(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        build_config("my-bucket", str(path), [])


def test_the_mount_point_check_can_be_skipped(tmp_path: Path) -> None:
    cfg = build_config("my-bucket", "relative/none", [], check_mountpoint=False)
    assert cfg.mountpoint == "relative/none"


def test_fuse_options_pass_through(mnt: str) -> None:
    cfg = config(mnt, "allow_other,default_permissions,fsname=s3:backup,noatime")
    assert cfg.fuse_options == ("allow_other", "default_permissions", "fsname=s3:backup",
                                "noatime")
    assert not cfg.read_only


def test_ro_makes_the_mount_read_only(mnt: str) -> None:
    cfg = config(mnt, "ro")
    assert cfg.read_only is True
    assert "ro" in cfg.fuse_options


@pytest.mark.parametrize("option", ["_netdev", "nofail", "defaults", "noauto", "auto", "user",
                                    "users", "comment=systemd.requires=network.target"])
def test_fstab_only_options_are_accepted_and_dropped(mnt: str, option: str) -> None:
    cfg = config(mnt, f"{option},allow_other")
    assert cfg.fuse_options == ("allow_other",)


def test_a_typical_fstab_line(mnt: str) -> None:
    cfg = config(mnt, "_netdev,nofail,allow_other,storage_class=standard_ia,part_size=16M")
    assert cfg.fuse_options == ("allow_other",)
    assert (cfg.storage_class, cfg.part_size) == ("STANDARD_IA", 16 * MiB)


# -------------------------------------------------------------------- target


@pytest.mark.parametrize(
    ("target", "bucket", "prefix"),
    [
        ("bkt", "bkt", ""),
        ("bkt:", "bkt", ""),
        ("bkt:x", "bkt", "x/"),
        ("bkt:x/y/", "bkt", "x/y/"),
        ("bkt:/x/y", "bkt", "x/y/"),
        ("my.bucket-1:backups/2024", "my.bucket-1", "backups/2024/"),
    ],
)
def test_bucket_and_prefix(target: str, bucket: str, prefix: str) -> None:
    assert parse_target(target) == (bucket, prefix)


@pytest.mark.parametrize("target", ["", ":prefix", "Upper", "-bkt", "bkt/x", "b k"])
def test_an_invalid_bucket_name_is_refused(target: str) -> None:
    with pytest.raises(ConfigError, match="bucket name"):
        parse_target(target)


def test_the_target_reaches_the_config(mnt: str) -> None:
    cfg = config(mnt, target="bkt:x/y/")
    assert (cfg.bucket, cfg.prefix, cfg.prefix_display) == ("bkt", "x/y/", "bkt:x/y/")
