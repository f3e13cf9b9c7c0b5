"""Enums, object references and the base classes of every schema.

Models are frozen and reject unknown fields. Scalars are strict (``"3"`` is not a slide
number, ``1`` is not ``True``); enums and UUIDs also accept their plain JSON values so
code can write ``tier="recent"``. Datetimes must carry a time zone and are normalised
to UTC, so MongoDB (which stores UTC) and Kafka consumers see one representation.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum, IntEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from schemas.topics import Priority

SCHEMA_VERSION: Literal[1] = 1


def _not_bool(value: Any) -> Any:
    # Literal[1] alone accepts True and 1.0 (both == 1 in Python): a version is an integer.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, float):
        raise ValueError("must be an integer, not a number with a fraction part")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_not_bool)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, Field(strict=True), AfterValidator(_to_utc)]
"""A time-zone-aware datetime (naive ones are rejected), stored as UTC."""

NonEmptyStr = Annotated[str, StringConstraints(strict=True, min_length=1)]
ShortText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def lax_enum(enum_cls: type[Enum]) -> Any:
    """``enum_cls`` that also accepts its exact plain value (``"recent"``, ``0``) from Python
    code; a bool or a numeric string is still rejected (strict mode alone would demand an
    enum instance, lax mode would take ``True`` for ``ImageState.HR``)."""
    base = int if issubclass(enum_cls, int) else str
    allowed = ", ".join(repr(m.value) for m in enum_cls)

    def coerce(value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as ImageState.HR
            raise ValueError(f"must be one of {allowed}")
        if type(value) is base:
            try:
                return enum_cls(value)
            except ValueError as exc:
                raise ValueError(f"must be one of {allowed}") from exc
        return value

    return Annotated[enum_cls, BeforeValidator(coerce)]


class Strict(BaseModel):
    """Base of every schema: immutable, no unknown fields, no silent type coercion."""

    # hide_input_in_errors: a logged ValidationError must not echo identity data.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


class ImageState(IntEnum):
    """SPEC 2: state 0 = LR, 1 = HR."""

    LR = 0
    HR = 1


class StorageTier(str, Enum):
    """Where an image lives: the three permanent LR tiers and the temporary HR cache."""

    RECENT = "recent"  # patients currently in hospital
    MID = "mid"  # examined within the last year
    LONG = "long"  # examined more than a year ago
    TEMPORARY = "temporary"  # the HR cache (settings.storage.hr_cache)

    @property
    def permanent(self) -> bool:
        return self is not StorageTier.TEMPORARY

    @property
    def settings_name(self) -> str:
        """Key of this tier in ``Settings.storage.tiers()``."""
        return "hr_cache" if self is StorageTier.TEMPORARY else self.value


class QcCheckName(str, Enum):
    """Quality checks of SPEC 1, plus the structural ones that precede them."""

    READABLE = "readable"  # the file decodes and its dimensions are sane
    TISSUE = "tissue"  # enough tissue on the slide to review
    COLOUR_CAST = "colour_cast"  # colour histogram distance to the reference image
    BLUR = "blur"  # gradient / spatial-frequency sharpness
    BUBBLES = "bubbles"  # air bubbles under the cover slip
    FOLDS = "folds"  # tissue folds


class QcFailureKind(str, Enum):
    QUALITY = "quality"  # one or more quality checks failed
    UNREADABLE = "unreadable"  # truncated or corrupt file
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_LARGE = "too_large"  # too large to decode safely
    INVALID_IDS = "invalid_ids"  # patient / exam / slide IDs missing or malformed
    MISSING_OBJECT = "missing_object"  # the ingest object is gone


# Field types for the enums: strict, but also take the plain value from Python code.
ImageStateField = lax_enum(ImageState)
StorageTierField = lax_enum(StorageTier)
QcCheckNameField = lax_enum(QcCheckName)
QcFailureKindField = lax_enum(QcFailureKind)
PriorityField = lax_enum(Priority)

# S3 bucket naming rules (lower case, 3-63 chars, no leading/trailing dot or dash).
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
KEY_MAX_LENGTH = 1024


class ObjectRef(Strict):
    """One object in object storage. The key is checked so it cannot escape its bucket
    when used as a file path (export, organise) or a URL."""

    bucket: Annotated[str, StringConstraints(strict=True, pattern=BUCKET_PATTERN)]
    key: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=KEY_MAX_LENGTH)]

    @field_validator("key")
    @classmethod
    def _safe_key(cls, key: str) -> str:
        if key.startswith("/"):
            raise ValueError("object key must be relative (no leading '/')")
        if "\\" in key:
            raise ValueError("object key must not contain backslashes")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
            raise ValueError("object key must not contain control characters")
        # A trailing "/" names a prefix (a folder of HR tiles); other empty segments are not allowed.
        segments = key.split("/")
        if segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]
        for segment in segments:
            if segment in ("", ".", ".."):
                raise ValueError("object key must not have empty, '.' or '..' segments")
        return key

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}"


class PatientIdentity(Strict):
    """Identity data of a patient. Never logged (every field name is in IDENTITY_FIELDS)."""

    name: ShortText | None = None
    given_name: ShortText | None = None
    family_name: ShortText | None = None
    birth_date: date | None = None
    sex: Literal["F", "M", "O", "U"] | None = None
    national_id: ShortText | None = None
    address: Annotated[str, StringConstraints(strict=True, max_length=1024)] | None = None
    phone: Annotated[str, StringConstraints(strict=True, max_length=64)] | None = None

    @field_validator("birth_date", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        return _parse_birth_date(value)


def _parse_birth_date(value: Any) -> Any:
    # Accept a date, an ISO "YYYY-MM-DD" string (JSON) or a datetime (MongoDB cannot
    # store a bare date); anything else is an error naming the field.
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("birth_date must be an ISO date YYYY-MM-DD") from None
    raise ValueError(f"birth_date must be a date, got {type(value).__name__}")


IDENTITY_FIELDS: tuple[str, ...] = (
    "identity",
    "name",
    "patient_name",
    "given_name",
    "family_name",
    "middle_name",
    "maiden_name",
    "birth_date",
    "date_of_birth",
    "dob",
    "sex",
    "gender",
    "national_id",
    "ssn",
    "address",
    "phone",
    "email",
)
"""Field names whose values are patient identity data: redacted by the log processor."""

SENSITIVE_FIELDS: tuple[str, ...] = IDENTITY_FIELDS + ("clinical_info", "findings", "diagnosis")
"""Identity data plus free-text clinical content; none of it belongs in logs."""

