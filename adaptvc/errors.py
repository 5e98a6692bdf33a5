"""Every error adaptvc raises on purpose derives from :class:`AdaptvcError`.

Errors carry the data that explains them, and their message says what to do next. Where a built-in
exception has the same meaning, the error also derives from it (``except FileNotFoundError`` still
works), as huggingface_hub does.
"""

from __future__ import annotations


class AdaptvcError(Exception):
    """Root of adaptvc's errors. ``str(err)`` is a one-line message fit for a user."""


#: how the errors about a damaged store end: what to run next (left out where fsck itself reports them)
FSCK_ADVICE = "; run 'adaptvc fsck'"


def without_fsck_advice(message: str) -> str:
    """An error message as a line of fsck's own report: without the advice to run fsck (where an error's
    message ends, also when more text follows it)."""
    import re

    return re.sub(re.escape(FSCK_ADVICE) + r"(?=$|[;)])", "", message)


class NotARepositoryError(AdaptvcError, FileNotFoundError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"not an adaptvc repository (or any parent up to /): {path}; run 'adaptvc init' first")


class RepositoryExistsError(AdaptvcError, FileExistsError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"an adaptvc repository already exists at {path}")


class UnsupportedFormatError(AdaptvcError):
    pass


class NoAdapterError(AdaptvcError, FileNotFoundError):
    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"no PEFT adapter in {path}{extra}: expected adapter_config.json with adapter_model.safetensors, "
            "as written by model.save_pretrained()"
        )


class InvalidAdapterError(AdaptvcError, ValueError):
    """A file that claims to be part of an adapter but cannot be read as one."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class PickleRefusedError(AdaptvcError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is a pickle file, which can run arbitrary code when loaded; adaptvc stores only "
            "safetensors. Save the adapter with save_pretrained(..., safe_serialization=True), or pass "
            "--allow-pickle to convert it (loaded with torch.load(weights_only=True))"
        )


class ObjectNotFoundError(AdaptvcError, KeyError):
    def __init__(self, oid: str) -> None:
        self.oid = oid
        super().__init__(f"object {oid} is missing from the store{FSCK_ADVICE}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ChecksumMismatchError(AdaptvcError):
    """Bytes whose hash is not the one they were stored or announced under."""

    def __init__(self, what: str, expected: str, got: str) -> None:
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(f"{what} is corrupt: expected hash {expected}, got {got}{FSCK_ADVICE}")


class CorruptObjectError(AdaptvcError):
    def __init__(self, oid: str, reason: str) -> None:
        self.oid = oid
        self.reason = reason
        super().__init__(f"object {oid} is not valid: {reason}{FSCK_ADVICE}")


class CorruptPackError(CorruptObjectError):
    """A pack or its index that cannot be used (its objects are then unavailable, never wrong)."""

    def __init__(self, name: str, reason: str) -> None:
        self.oid = name
        self.reason = reason
        AdaptvcError.__init__(self, f"{name} is corrupt: {reason}{FSCK_ADVICE}")


class InvalidRefNameError(AdaptvcError, ValueError):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid name {name!r}: {reason}")


class RefNotFoundError(AdaptvcError, KeyError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no such ref: {ref}")

    def __str__(self) -> str:
        return str(self.args[0])


class RemoteNotFoundError(RefNotFoundError):
    def __init__(self, name: str) -> None:
        self.ref = name
        self.name = name
        AdaptvcError.__init__(self, f"no such remote {name!r}")


class RefExistsError(AdaptvcError, FileExistsError):
    def __init__(self, ref: str, hint: str = "") -> None:
        self.ref = ref
        super().__init__(f"{ref} already exists{hint}")


class RefMovedError(AdaptvcError):
    """Compare-and-swap on a ref failed: somebody else moved it first."""

    def __init__(self, ref: str, expected: str | None, actual: str | None) -> None:
        self.ref = ref
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"ref moved: {ref} is now at {actual or 'nothing'} (expected {expected or 'nothing'}); "
            "another process committed first, nothing was lost: run the command again"
        )


class RefLockedError(AdaptvcError):
    def __init__(self, ref: str, lock_path: str, pid: int | None = None, stale: bool = False) -> None:
        self.ref = ref
        self.lock_path = lock_path
        self.pid = pid
        self.stale = stale
        if stale:
            msg = (f"{ref} is locked by process {pid or '?'}, which is no longer running: the lock is stale; "
                   "run 'adaptvc unlock' to clear it")
        else:
            msg = (f"{ref} is locked by another adaptvc process ({pid or 'unknown pid'}); try again when it is "
                   f"done, or if it is not running, run 'adaptvc unlock'")
        super().__init__(msg)


class RevisionError(AdaptvcError, KeyError):
    def __init__(self, rev: str, reason: str) -> None:
        self.rev = rev
        self.reason = reason
        super().__init__(f"bad revision {rev!r}: {reason}")

    def __str__(self) -> str:
        return str(self.args[0])


class EmptyRepositoryError(AdaptvcError):
    def __init__(self) -> None:
        super().__init__("the repository has no commits yet; run 'adaptvc commit -m MESSAGE' first")


class NothingToCommitError(AdaptvcError):
    def __init__(self, head: str) -> None:
        self.head = head
        super().__init__(
            f"nothing to commit: the adapter is identical to {head[:12]} (use --allow-empty to commit anyway)"
        )


class UncommittedChangesError(AdaptvcError):
    """The work tree differs from HEAD where a command would write. ``hint`` is what to do next (a command
    without --force names another way to discard the changes)."""

    def __init__(self, paths: list[str], hint: str = "commit them, or use --force to discard them") -> None:
        self.paths = paths
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        super().__init__(f"the work tree has uncommitted changes ({shown}); {hint}")


class NoWorkTreeError(AdaptvcError):
    """A command that reads or writes the work tree, in a repository that has none (``init --no-work-tree``:
    its versions come from checkpoints or live models). ``what`` says what to do instead."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"this repository has no work tree (its versions come from checkpoints); {what}")


class WouldOverwriteError(AdaptvcError, FileExistsError):
    def __init__(self, paths: list[str], hint: str = "use --force, or choose an empty folder") -> None:
        self.paths = paths
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        super().__init__(f"would overwrite files that differ: {shown}; {hint}")


class UntrackedFileError(WouldOverwriteError):
    """A file adaptvc did not write stands where a version would put one of its files. Never overwritten,
    not even with --force (as git says: "untracked working tree files would be overwritten")."""

    def __init__(self, paths: list[str], where: str = "") -> None:
        self.paths = paths
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        AdaptvcError.__init__(
            self, f"untracked file would be overwritten: {shown}{where}; adaptvc did not write it and never "
                  "replaces it: move it away (or commit it), then run the command again")


class UnsafePathError(AdaptvcError, ValueError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unsafe path {path!r}: {reason}")


class SymlinkRefusedError(UnsafePathError):
    """adaptvc never follows a symbolic link below a folder it reads or writes."""

    def __init__(self, path: str, writing: bool = False) -> None:
        self.path = path
        self.reason = "symbolic link"
        verb = "write through" if writing else "follow"
        AdaptvcError.__init__(self, f"{path} is a symbolic link: adaptvc does not {verb} links; replace it with "
                                    "the real file or folder")


class InvalidInputError(AdaptvcError, ValueError):
    """A value given by the caller (argv, the environment, the Python API) that cannot be used."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what} {reason}")


class InvalidTextError(InvalidInputError):
    """Text that is not valid Unicode (a lone surrogate, or bytes that are not UTF-8)."""

    def __init__(self, what: str) -> None:
        super().__init__(what, "is not valid UTF-8 text")


class FolderBusyError(AdaptvcError):
    def __init__(self, folder: str, pid: int | None) -> None:
        self.folder = folder
        self.pid = pid
        super().__init__(f"another adaptvc process ({pid or 'unknown pid'}) is writing {folder}; wait for it to "
                         "finish and run the command again")


class AdaptvcWarning(UserWarning):
    """Something the user should know that did not stop the operation (printed as ``warning: …``)."""


class FileChangedError(AdaptvcError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} changed while it was being read; wait for the writer to finish and try again")


class InvalidConfigError(AdaptvcError, ValueError):
    """A value in an adapter config that cannot be computed with (a ``lora_alpha`` that is not a number, an
    ``alpha_pattern`` that is not an object, …). ``key`` names it (``alpha_pattern["q_proj"]`` for a pattern's
    value); ``where`` names the config and its version (``sub/adapter_config.json of version 1a2b3c4d5e6f``),
    when known."""

    def __init__(self, key: str, value: object, expected: str, where: str = "") -> None:
        self.key = key
        self.value = value
        self.expected = expected
        self.where = where
        super().__init__(f"{where or 'adapter_config.json'}: {key} is {_shown(value)}, not {expected}")

    def located(self, where: str) -> InvalidConfigError:
        """The same error, naming the config and version it is in."""
        return InvalidConfigError(self.key, self.value, self.expected, where)


def _shown(value: object) -> str:
    """A config value for a one-line message: JSON, shortened."""
    import json

    try:
        text = json.dumps(value, sort_keys=True, allow_nan=True, default=str)
    except (ValueError, TypeError, RecursionError):  # an int beyond Python's digit limit, a deep nesting
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."
