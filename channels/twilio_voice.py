"""Warning calls through Twilio's Calls API (channel `voice`).

The adapter only starts the call: Twilio then fetches what to say from `notifier web`
(`{public_base_url}/twilio/voice/{notification_id}`, TwiML built in `notifier.web` from the script
stored on the notification when it was claimed) and POSTs the call's progress to
`{public_base_url}/twilio/calls/status`. The Call SID is the provider id those requests name.

When a call counts as delivered (decided in `notifier.web`, see its docstring): when Twilio,
having spoken the whole warning once, follows the TwiML's `<Redirect>` to
`/twilio/voice/{id}/heard` — it only gets there if nobody hung up before the end. busy,
no-answer, failed, canceled, and a call completed without that marker, are receipts too
(undelivered / failed). Errors are mapped as for SMS (`channels.twilio_sms.channel_error`).
"""

from __future__ import annotations

from channels.base import OutgoingMessage, SendResult
from channels.twilio_sms import TwilioChannel, created_result
from notifier.errors import ConfigError
from notifier.settings import TwilioSettings, VoiceSettings

CALL_STATUS_PATH = "/twilio/calls/status"
# Every progress step is reported: "answered" shows in history even for a call cut short.
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


def twiml_path(notification_id: int) -> str:
    """Where Twilio fetches the call's TwiML (relative to `public_base_url`)."""
    return f"/twilio/voice/{notification_id}"


class TwilioVoiceChannel(TwilioChannel):
    """Channel `voice`: one outbound call per notification (module docstring)."""

    name = "voice"

    def __init__(self, settings: TwilioSettings, voice: VoiceSettings) -> None:
        if not settings.from_number:
            raise ConfigError("Twilio calls need twilio.from_number, the caller id (NOTIFIER_TWILIO__FROM_NUMBER)")
        super().__init__(settings)
        self.voice = voice
        self.base = settings.public_base_url.rstrip("/")

    def send(self, message: OutgoingMessage) -> SendResult:
        """Start the call; Twilio fetches its TwiML from us once it is answered."""
        created = self.api.call(lambda client: client.calls.create(
            to=message.destination, from_=self.settings.from_number,
            url=self.base + twiml_path(message.notification_id), method="POST",
            status_callback=self.base + CALL_STATUS_PATH, status_callback_method="POST",
            status_callback_event=STATUS_EVENTS, timeout=self.voice.ring_timeout_seconds))
        return created_result(created)
