"""The base of every error ltxv reports about its input (a request, a file, a device, a tensor given to a model).

One line naming the input and the problem; ``param`` names the request field at fault where there is one (the
service returns it as ``error.param``), ``code`` says what kind of problem it is. The front doors catch
:class:`LtxvError` and print its message; anything else escaping them is a bug in ltxv."""

from __future__ import annotations


class LtxvError(ValueError):
    """An input ltxv cannot use. ``param``: the request field (``"height"``, ``"conditioning[1].media"``...) or
    None; ``code``: ``"invalid_value"``, ``"media"``, ``"output"``, ``"device"``, ``"model"``, ``"memory"`` or
    ``"file"``."""

    code = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(" ".join(str(message).split("\n")))  # one line, whatever was put together
        self.param = param
        if code is not None:
            self.code = code


class InputError(LtxvError):
    """A tensor given to a model or a reader that does not fit it (shape, dtype, range, finiteness)."""
