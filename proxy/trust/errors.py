"""Why a tag could not be trusted, as types.

Trust code raises these; one place (``proxy.errors``) turns each into the
status, code and message a client sees. "Not signed" and "cannot verify" are
different types on purpose: the first is a verdict, the second is an outage.
"""


class TrustError(Exception):
    """Base of every reason trust data gives no answer."""


class NoTrustData(TrustError):
    """The trust server has no trust data at all for the GUN."""

    def __init__(self, gun: str, server: str, trusted_before: bool = False) -> None:
        self.gun = gun
        self.server = server
        note = " (a root was trusted for it before: its trust data was removed)" if trusted_before else ""
        super().__init__(
            f"remote trust data does not exist for {gun}: {server} does not have trust data for {gun}{note}"
        )


class TagNotSigned(TrustError):
    """The GUN has valid trust data, but no trusted role signs the tag."""

    def __init__(self, gun: str, tag: str) -> None:
        self.gun = gun
        self.tag = tag
        super().__init__(
            f"remote trust data does not exist for {gun}:{tag}: No valid trust data for {tag}"
        )


class VerificationFailed(TrustError):
    """Trust data exists but fails a check; ``check`` names which one."""

    def __init__(self, role: str, check: str, detail: str, gun: str = "") -> None:
        self.gun = gun
        self.role = role
        self.check = check
        self.detail = detail
        super().__init__(self._text())

    def _text(self) -> str:
        where = f" for {self.gun}" if self.gun else ""
        return f"trust data{where} failed verification: {self.role}: {self.check}: {self.detail}"

    def for_gun(self, gun: str) -> "VerificationFailed":
        """Name the GUN, which the pure checks do not know."""
        self.gun = gun
        self.args = (self._text(),)
        return self


class UnreadableFile(VerificationFailed):
    """A downloaded file that is no JSON object at all (an error page, a cut-off body): the
    server did not send trust data, so nothing failed a check; the updater reports it as
    the trust server being unavailable."""

    def __init__(self, role: str, detail: str) -> None:
        super().__init__(role, "format", detail)


class TrustServerUnavailable(TrustError):
    """The trust server could not be asked; nothing can be verified."""

    def __init__(self, gun: str, server: str, reason: str) -> None:
        self.gun = gun
        self.server = server
        self.reason = reason
        super().__init__(
            f"cannot verify {gun}: trust server {server} is unavailable: {reason}"
        )


class DigestNotSigned(TrustError):
    """A manifest or blob digest that no signed tag of the GUN leads to."""

    def __init__(self, gun: str, digest: str, kind: str = "manifest") -> None:
        self.gun = gun
        self.digest = digest
        self.kind = kind
        reason = (
            "no signed tag points at it, nor does any signed manifest list or index name it"
            if kind == "manifest" else "no signed manifest of this repository names it"
        )
        super().__init__(f"{kind} {digest} is not signed for {gun}: {reason}")
