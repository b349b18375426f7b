"""What the sender reads in a delivery notice, in English and Dutch.

Plain words first: what happened, what it means for the message, what to do now.
"""

from __future__ import annotations

from secumail.mail.status import RecipientStatus

SUBJECTS = {
    "en": {
        "failed": "Not delivered: {subject}",
        "delayed": "Delivery delayed: {subject}",
        "bounced": "Not delivered after all: {subject}",
    },
    "nl": {
        "failed": "Niet afgeleverd: {subject}",
        "delayed": "Aflevering vertraagd: {subject}",
        "bounced": "Toch niet afgeleverd: {subject}",
    },
}

NO_SUBJECT = {"en": "your message", "nl": "uw bericht"}

INTRO = {
    "en": {
        "failed": "Secumail could not deliver your message{ref} to the recipient(s) below.",
        "delayed": "Secumail has not yet been able to deliver your message{ref}. "
        "It keeps trying until {until}; you do not need to send it again.",
        # A bounce that came later, to the inbound MX: first accepted, then not delivered.
        "bounced": "The recipient's mail server accepted your message{ref}, but later "
        "reported that it could not deliver it to the recipient(s) below.",
    },
    "nl": {
        "failed": "Secumail kon uw bericht{ref} niet afleveren bij de onderstaande ontvanger(s).",
        "delayed": "Secumail heeft uw bericht{ref} nog niet kunnen afleveren. "
        "Het blijft het proberen tot {until}; u hoeft het niet opnieuw te versturen.",
        "bounced": "De mailserver van de ontvanger heeft uw bericht{ref} aangenomen, maar "
        "meldde later dat het niet kon worden afgeleverd bij de onderstaande ontvanger(s).",
    },
}

REASONS = {
    "en": {
        RecipientStatus.REFUSED_INSECURE: (
            "NOT SENT: the recipient's mail server cannot be reached over a secure "
            "connection (encrypted, with a verified certificate). Secumail never sends "
            "your message over an insecure connection, so it was not sent at all.\n"
            "What to do: use another channel for this information (a secure portal, "
            "registered post, or telephone), or ask the recipient to have their mail "
            "server fixed (TLS with a valid certificate)."
        ),
        RecipientStatus.BOUNCED: (
            "The recipient's mail server refused the message.\n"
            "What to do: check the address; the server's answer below says more."
        ),
        RecipientStatus.EXPIRED: (
            "Delivery was tried for several days without success; Secumail has stopped trying.\n"
            "What to do: use another channel, or check the address with the recipient."
        ),
        RecipientStatus.REJECTED: (
            "Secumail did not accept the message for delivery.\n"
            "What to do: see the reason below; contact your administrator if unclear."
        ),
        RecipientStatus.DEFERRED: "Delivery is being retried.",
    },
    "nl": {
        RecipientStatus.REFUSED_INSECURE: (
            "NIET VERZONDEN: de mailserver van de ontvanger is niet bereikbaar via een "
            "beveiligde verbinding (versleuteld, met een geverifieerd certificaat). "
            "Secumail verstuurt uw bericht nooit over een onveilige verbinding, en heeft "
            "het dus helemaal niet verzonden.\n"
            "Wat nu: gebruik een ander kanaal voor deze informatie (een beveiligd portaal, "
            "aangetekende post of telefoon), of vraag de ontvanger de mailserver te laten "
            "herstellen (TLS met een geldig certificaat)."
        ),
        RecipientStatus.BOUNCED: (
            "De mailserver van de ontvanger heeft het bericht geweigerd.\n"
            "Wat nu: controleer het adres; het antwoord van de server hieronder zegt meer."
        ),
        RecipientStatus.EXPIRED: (
            "Er is enkele dagen geprobeerd het bericht af te leveren, zonder succes; "
            "Secumail probeert het niet meer.\n"
            "Wat nu: gebruik een ander kanaal, of controleer het adres bij de ontvanger."
        ),
        RecipientStatus.REJECTED: (
            "Secumail heeft het bericht niet voor aflevering geaccepteerd.\n"
            "Wat nu: zie de reden hieronder; neem bij twijfel contact op met uw beheerder."
        ),
        RecipientStatus.DEFERRED: "De aflevering wordt opnieuw geprobeerd.",
    },
}

LABELS = {
    "en": {
        "recipient": "Recipient",
        "reason": "Reason",
        "details": "Details",
        "message_id": "Message ID",
    },
    "nl": {
        "recipient": "Ontvanger",
        "reason": "Reden",
        "details": "Details",
        "message_id": "Bericht-ID",
    },
}


def locale_or_default(locale: str | None) -> str:
    return locale if locale in SUBJECTS else "en"
