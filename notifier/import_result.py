"""What an import did: counts, the rejected lines with their reasons, warnings (the `--json` document).

Shared by every importer (subscribers, assignments, feeds), so the CLI prints them one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from notifier.ingest.records import Rejection

MAX_REPORTED_ERRORS = 1000  # the JSON output lists at most this many; counts stay exact


@dataclass
class ImportResult:
    """What an import did: the `--json` document of every import command."""

    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    id: int | None = None
    errors: list[dict[str, object]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warned: int = 0  # exact count of `warnings`, which is capped like `errors`
    warnings: list[dict[str, object]] = field(default_factory=list)
    already_imported: bool = False  # an Authority request seen before: `id` is the feed it already is

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": rejection.line, "reason": rejection.reason})

    def warn(self, line: int, reason: str) -> None:
        """Note something on an accepted line the operator should look at (kept anyway)."""
        self.warned += 1
        if len(self.warnings) < MAX_REPORTED_ERRORS:
            self.warnings.append({"line": line, "reason": reason})

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "accepted": self.accepted, "rejected": self.rejected,
                "errors": self.errors, "warnings": self.warnings,
                **({"counts": self.counts} if self.counts else {}),
                **({"already_imported": True} if self.already_imported else {})}
