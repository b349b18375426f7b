"""What an account reads when one of its senders fell in TLS or drew a burst of failed
logins, and when that is over — in English and Dutch (`mail.alert_mail.AlertText`).

Pure. The values put in come from the gateway (credential usernames it generated, OpenSSL's
version and cipher names); `mail.alert_mail` makes them header-safe all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

from secumail.mail.alert_mail import AlertText
from secumail.mail.tls_strength import TlsUse

CHANNELS = {"en": {"smtp": "SMTP", "api": "the API"}, "nl": {"smtp": "SMTP", "api": "de API"}}


def tls_downgrade(username: str, channel: str, before: TlsUse, now: TlsUse) -> dict[str, AlertText]:
    en_via = CHANNELS["en"].get(channel, channel)
    nl_via = CHANNELS["nl"].get(channel, channel)
    return {
        "en": AlertText(
            f"Weaker TLS from sender {username}",
            f"The sender with credential {username} connected to Secumail over {en_via} with\n"
            f"{now}, weaker than the {before} it used before.\n\n"
            "The message was accepted. A downgrade can mean an outdated mail server or\n"
            "library, a changed TLS setting, or someone in between. Check the TLS settings\n"
            "of that system. You hear from us again when it uses the stronger TLS again.",
        ),
        "nl": AlertText(
            f"Zwakkere TLS van afzender {username}",
            f"De afzender met inloggegevens {username} verbond via {nl_via} met Secumail over\n"
            f"{now}, zwakker dan de {before} die hij eerder gebruikte.\n\n"
            "Het bericht is aangenomen. Een terugval kan wijzen op een verouderde mailserver\n"
            "of bibliotheek, een gewijzigde TLS-instelling, of iemand ertussen. Controleer de\n"
            "TLS-instellingen van dat systeem. U hoort opnieuw van ons zodra het weer de\n"
            "sterkere TLS gebruikt.",
        ),
    }


def tls_recovered(username: str, channel: str, now: TlsUse) -> dict[str, AlertText]:
    en_via = CHANNELS["en"].get(channel, channel)
    nl_via = CHANNELS["nl"].get(channel, channel)
    return {
        "en": AlertText(
            f"TLS of sender {username} is strong again",
            f"The sender with credential {username} connected over {en_via} with {now}\n"
            "again, as strong as before. Nothing more to do.",
        ),
        "nl": AlertText(
            f"TLS van afzender {username} is weer sterk",
            f"De afzender met inloggegevens {username} verbond via {nl_via} weer met {now},\n"
            "even sterk als eerder. U hoeft niets meer te doen.",
        ),
    }


def auth_burst(username: str, failures: int, window: float) -> dict[str, AlertText]:
    minutes = max(1, round(window / 60))
    return {
        "en": AlertText(
            f"Failed logins for credential {username}",
            f"{failures} logins with credential {username} failed within {minutes} minute(s).\n\n"
            "If that was not a system of yours with an old password, someone may be\n"
            "guessing it. Failed logins are slowed down; if in doubt, revoke the credential\n"
            "and create a new one. You hear from us again when the failures have stopped.",
        ),
        "nl": AlertText(
            f"Mislukte aanmeldingen voor inloggegevens {username}",
            f"{failures} aanmeldingen met inloggegevens {username} mislukten binnen {minutes}"
            " minuut/minuten.\n\n"
            "Was dat geen eigen systeem met een oud wachtwoord, dan probeert mogelijk iemand\n"
            "het te raden. Mislukte aanmeldingen worden afgeremd; trek bij twijfel de\n"
            "inloggegevens in en maak nieuwe aan. U hoort opnieuw van ons als de mislukte\n"
            "aanmeldingen zijn gestopt.",
        ),
    }


def auth_quiet(username: str, window: float) -> dict[str, AlertText]:
    minutes = max(1, round(window / 60))
    return {
        "en": AlertText(
            f"Failed logins for credential {username} have stopped",
            f"No login with credential {username} has failed for {minutes} minute(s).",
        ),
        "nl": AlertText(
            f"Mislukte aanmeldingen voor inloggegevens {username} gestopt",
            f"Al {minutes} minuut/minuten is geen aanmelding met inloggegevens {username} mislukt.",
        ),
    }


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def client_cert_expiring(username: str, not_after: float, days_left: int) -> dict[str, AlertText]:
    day = _day(not_after)
    return {
        "en": AlertText(
            f"Client certificate of sender {username} expires {day}",
            f"The sender with credential {username} connected to Secumail with a client\n"
            f"certificate that expires on {day} (in {days_left} day(s)).\n\n"
            "After that date its connections fail. Install a renewed certificate on that\n"
            "system; you hear from us again once it connects with one.",
        ),
        "nl": AlertText(
            f"Clientcertificaat van afzender {username} verloopt {day}",
            f"De afzender met inloggegevens {username} verbond met Secumail met een\n"
            f"clientcertificaat dat verloopt op {day} (over {days_left} dag(en)).\n\n"
            "Na die datum mislukken de verbindingen. Installeer een vernieuwd certificaat op\n"
            "dat systeem; u hoort opnieuw van ons zodra het daarmee verbindt.",
        ),
    }


def client_cert_renewed(username: str, not_after: float) -> dict[str, AlertText]:
    day = _day(not_after)
    return {
        "en": AlertText(
            f"Client certificate of sender {username} renewed",
            f"The sender with credential {username} now connects with a client certificate\n"
            f"valid until {day}. Nothing more to do.",
        ),
        "nl": AlertText(
            f"Clientcertificaat van afzender {username} vernieuwd",
            f"De afzender met inloggegevens {username} verbindt nu met een clientcertificaat\n"
            f"dat geldig is tot {day}. U hoeft niets meer te doen.",
        ),
    }
