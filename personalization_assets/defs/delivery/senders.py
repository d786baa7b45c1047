"""Senders: hand one rendered email to an SMTP server or an HTTP email service. No Dagster imports.

Every sender turns an `OutgoingEmail` into one `SendOutcome` per message, classified so the
ledger can act on it without knowing the transport:

    sent        accepted by the server (provider message id recorded)
    temporary   not handed over, may succeed later: SMTP 4xx, connection refused or dropped
                *before* the message content was sent, HTTP 429/5xx. Retried with backoff.
    rejected    the recipient was refused for good (SMTP 5xx to RCPT TO, an ESP's per-recipient
                rejection): the address bounces and is suppressed.
    failed      refused for a reason that is not the address (SMTP 5xx to MAIL FROM or DATA,
                HTTP 4xx for the request): recorded, not retried, not suppressed.
    unknown     the content was handed over but no answer came (connection dropped after the
                message body): it may have been delivered, so it is never resent (at most once).

Each message carries a deterministic `Message-ID` built from its idempotency key, so a message
that ends `unknown` can be matched against the provider's or the mailbox's log afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import smtplib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Literal, Protocol

import httpx

_LEADING_DOT = re.compile(rb"(?m)^\.")
OutcomeKind = Literal["sent", "temporary", "rejected", "failed", "unknown"]


@dataclass(frozen=True)
class OutgoingEmail:
    """One message, ready for a transport."""

    idempotency_key: str
    to_address: str
    from_address: str
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    from_name: str = ""
    reply_to: str = ""
    message_id_domain: str = "mail.example.com"

    @property
    def message_id(self) -> str:
        return f"<{self.idempotency_key}@{self.message_id_domain}>"


@dataclass(frozen=True)
class SendOutcome:
    kind: OutcomeKind
    provider_message_id: str | None = None
    error: str | None = None


def build_mime(email: OutgoingEmail, *, date=None) -> EmailMessage:
    """multipart/alternative (text first, html preferred) with the list and tracing headers."""
    message = EmailMessage()
    message["From"] = formataddr((email.from_name, email.from_address))
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["X-Idempotency-Key"] = email.idempotency_key
    for name, value in email.headers.items():
        message[name] = value
    # quoted-printable keeps every line under SMTP's 998-octet limit, whatever the HTML.
    message.set_content(email.text or "", subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(
        email.html or "", subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return message


class Sender(Protocol):
    """A transport. `max_batch` messages are claimed in the ledger before each `send_batch`."""

    max_batch: int

    def open(self) -> None: ...

    def close(self) -> None: ...

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> Iterator[SendOutcome]:
        """One outcome per email, in order, yielded as soon as it is known."""
        ...


class DryRunSender:
    """Sends nothing; remembers the keys of what it would have sent (the demo default).

    Only the keys: holding every message (~12 KB of HTML each) took gigabytes at 1M payloads.
    Claims 1,000 at a time (each claim is one ledger UPDATE; nothing leaves the machine)."""

    max_batch = 1000

    def __init__(self) -> None:
        self.sent_keys: list[str] = []

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> Iterator[SendOutcome]:
        for email in emails:
            self.sent_keys.append(email.idempotency_key)
            yield SendOutcome("sent", provider_message_id=f"dry-run:{email.idempotency_key}")


@dataclass
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str = ""
    password: str = ""
    timeout_seconds: float = 30.0
    local_hostname: str | None = None


class SmtpSender:
    """Standard-library SMTP with one reused connection, reconnecting after a drop.

    The SMTP dialogue is driven step by step (MAIL, RCPT, DATA, body) so a dropped connection is
    classified by how far it got: before the body nothing was handed over (`temporary`, safe to
    retry); after the body the server may have queued it (`unknown`, never resent).
    """

    max_batch = 1

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def open(self) -> None:
        if self._smtp is not None:
            return
        s = self.settings
        if s.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host,
                s.port,
                timeout=s.timeout_seconds,
                local_hostname=s.local_hostname,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(
                s.host, s.port, timeout=s.timeout_seconds, local_hostname=s.local_hostname
            )
        try:
            smtp.ehlo_or_helo_if_needed()
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp

    def close(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._smtp.close()
        self._smtp = None

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> Iterator[SendOutcome]:
        for email in emails:
            yield self.send(email)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        try:
            body = _dot_stuffed(build_mime(email).as_bytes(policy=policy.SMTP))
            email.to_address.encode("ascii")
        except (ValueError, TypeError, UnicodeError) as error:
            return SendOutcome("failed", error=f"invalid message: {error}")
        try:
            self.open()
        except smtplib.SMTPResponseException as error:
            self._smtp = None
            return SendOutcome("temporary", error=_smtp_error("connect", error))
        except (OSError, smtplib.SMTPException) as error:
            self._smtp = None
            return SendOutcome("temporary", error=f"connect: {error!r}")
        smtp = self._smtp
        assert smtp is not None
        stage = "MAIL FROM"
        try:
            code, reply = smtp.mail(email.from_address)
            if code != 250:
                return self._refused(stage, code, reply, recipient=False)
            stage = "RCPT TO"
            code, reply = smtp.rcpt(email.to_address)
            if code not in (250, 251):
                return self._refused(stage, code, reply, recipient=True)
            stage = "DATA"
            code, reply = smtp.docmd("data")
            if code != 354:
                return self._refused(stage, code, reply, recipient=False)
            stage = "body"
            smtp.send(body)
            code, reply = smtp.getreply()
            if code != 250:
                return self._refused("end of DATA", code, reply, recipient=False)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self._drop()
            kind: OutcomeKind = "unknown" if stage == "body" else "temporary"
            return SendOutcome(kind, error=f"connection lost at {stage}: {error!r}")
        except smtplib.SMTPException as error:
            self._drop()
            kind = "unknown" if stage == "body" else "failed"
            return SendOutcome(kind, error=f"{stage}: {error!r}")
        return SendOutcome("sent", provider_message_id=_queue_id(reply) or email.message_id)

    def _refused(self, stage: str, code: int, reply: bytes, *, recipient: bool) -> SendOutcome:
        self._reset()
        text = f"{stage}: {code} {reply.decode(errors='replace')}"
        if 400 <= code < 500 or code == -1:
            return SendOutcome("temporary", error=text)
        return SendOutcome("rejected" if recipient else "failed", error=text)

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None


def _dot_stuffed(body: bytes) -> bytes:
    """What `smtplib.SMTP.data` sends: leading dots doubled, then the terminating dot line."""
    quoted = _LEADING_DOT.sub(b"..", body)
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    return quoted + b".\r\n"


def _queue_id(reply: bytes) -> str | None:
    """The server's queue id from a reply like `2.0.0 Ok: queued as 4F2A1`, else the reply."""
    text = reply.decode(errors="replace").strip()
    if "queued as" in text:
        return text.rsplit("queued as", 1)[1].strip() or None
    return text or None


def _smtp_error(stage: str, error: smtplib.SMTPResponseException) -> str:
    return f"{stage}: {error.smtp_code} {error.smtp_error.decode(errors='replace')}"


@dataclass
class HttpEspSettings:
    url: str
    api_key: str = ""
    batch_size: int = 100
    timeout_seconds: float = 30.0


class HttpEspSender:
    """POSTs SendGrid/SES-style bulk JSON to any endpoint.

    Request: `{"messages": [{"idempotency_key", "message_id", "from", "to", "subject", "html",
    "text", "headers", "custom_args"}]}` with an `Idempotency-Key` header naming the batch.
    Response: 2xx accepts the batch; an optional JSON body `{"results": [{"idempotency_key",
    "status": "accepted"|"rejected"|"failed", "message_id", "error"}]}` gives per-message results
    (rejected = the address bounced). 429 and 5xx are temporary, other 4xx fail the batch;
    a timeout after the request was written is `unknown` for the whole batch.
    """

    def __init__(self, settings: HttpEspSettings, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.max_batch = settings.batch_size
        self._transport = transport
        self._client: httpx.Client | None = None

    def open(self) -> None:
        if self._client is None:
            headers = {"Content-Type": "application/json"}
            if self.settings.api_key:
                headers["Authorization"] = f"Bearer {self.settings.api_key}"
            self._client = httpx.Client(
                timeout=self.settings.timeout_seconds, headers=headers, transport=self._transport
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> Iterator[SendOutcome]:
        yield from self._post(list(emails))

    def _post(self, emails: list[OutgoingEmail]) -> list[SendOutcome]:
        self.open()
        assert self._client is not None
        batch_key = ",".join(e.idempotency_key for e in emails)
        try:
            response = self._client.post(
                self.settings.url,
                content=json.dumps({"messages": [_esp_message(e) for e in emails]}),
                headers={"Idempotency-Key": _short_hash(batch_key)},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            return [SendOutcome("temporary", error=f"connect: {error!r}")] * len(emails)
        except httpx.HTTPError as error:
            return [SendOutcome("unknown", error=f"no response: {error!r}")] * len(emails)
        status = response.status_code
        if status == 429 or status >= 500:
            return [SendOutcome("temporary", error=f"HTTP {status}: {response.text[:200]}")] * len(
                emails
            )
        if status >= 400:
            return [SendOutcome("failed", error=f"HTTP {status}: {response.text[:200]}")] * len(
                emails
            )
        return _esp_results(emails, response)


def _esp_message(email: OutgoingEmail) -> dict:
    return {
        "idempotency_key": email.idempotency_key,
        "message_id": email.message_id,
        "from": {"email": email.from_address, "name": email.from_name},
        "reply_to": email.reply_to or None,
        "to": [{"email": email.to_address}],
        "subject": email.subject,
        "html": email.html,
        "text": email.text,
        "headers": {**email.headers, "Message-ID": email.message_id},
        "custom_args": {"idempotency_key": email.idempotency_key},
    }


def _esp_results(emails: list[OutgoingEmail], response: httpx.Response) -> list[SendOutcome]:
    header_id = response.headers.get("X-Message-Id")
    try:
        body = response.json()
    except ValueError:
        body = None
    results = {}
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        results = {r.get("idempotency_key"): r for r in body["results"] if isinstance(r, dict)}
    outcomes = []
    for email in emails:
        result = results.get(email.idempotency_key)
        if result is None:
            provider_id = f"{header_id}:{email.idempotency_key}" if header_id else email.message_id
            outcomes.append(SendOutcome("sent", provider_message_id=provider_id))
            continue
        status = str(result.get("status", "accepted"))
        if status == "rejected":
            outcomes.append(SendOutcome("rejected", error=str(result.get("error", "rejected"))))
        elif status == "failed":
            outcomes.append(SendOutcome("failed", error=str(result.get("error", "failed"))))
        elif status == "deferred":
            outcomes.append(SendOutcome("temporary", error=str(result.get("error", "deferred"))))
        else:
            outcomes.append(
                SendOutcome(
                    "sent", provider_message_id=result.get("message_id") or email.message_id
                )
            )
    return outcomes


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
