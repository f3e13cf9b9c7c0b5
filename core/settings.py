"""Runtime configuration, read once from the environment (prefix ``SLIDESTREAM_``) or ``.env``.

Nested groups use a double underscore: ``SLIDESTREAM_KAFKA__PORT=19092``.
Unknown keys and invalid values are rejected at start-up with the offending name,
so a typo in a hospital's deployment file fails loudly instead of being ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.secrets import storage_key_pair

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The log salt every install shared before installs made their own: knowing it reverses refs.
_PUBLIC_LOG_SALT = "slidestream-log-salt"

LOOPBACK = "127.0.0.1"
# Default of compute.consistency_threshold_db (the justification is at that setting).
CONSISTENCY_THRESHOLD_DB = 28.0


class _Group(BaseModel):
    # hide_input_in_errors: a mistyped secret must not be echoed into start-up logs.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class KafkaSettings(_Group):
    host: str = LOOPBACK
    port: int = Field(19092, ge=1, le=65535)
    controller_port: int = Field(19093, ge=1, le=65535)
    # How long the broker waits for a silent worker before handing its partitions to the
    # others: after a worker is killed, its work (and `slidestream up`'s probe) resumes this
    # much later. Faust's default is 60 s; its heartbeats come from its own consumer thread,
    # so a busy event loop does not make a live worker look dead. The broker's floor is 6 s.
    session_timeout_s: float = Field(10.0, ge=6.0, le=300.0)
    heap_mb: int = Field(512, ge=256)
    version: str = "4.3.1"
    # Every client authenticates with SASL/SCRAM-SHA-512; there is no unauthenticated listener.
    # SASL_SSL adds TLS (with the system's CA certificates) for a broker across a network.
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    # Principals: the application's services, the HIS adapter (may only write patient events),
    # the scanner ingest (may only write slide.scanned and read its verdicts) and the broker's own
    # super user (inter-broker traffic, bootstrap: topics, ACLs).
    # A password left unset is made once per install in ``<state_dir>/secrets/kafka-<user>.password``
    # (mode 0600); there is no built-in password. Set them in production (docker-compose does).
    username: str = Field("slidestream-app", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    password: SecretStr | None = Field(None, min_length=16)
    his_username: str = Field("slidestream-his", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    his_password: SecretStr | None = Field(None, min_length=16)
    scanner_username: str = Field("slidestream-scanner", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    scanner_password: SecretStr | None = Field(None, min_length=16)
    admin_username: str = Field("slidestream-admin", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    admin_password: SecretStr | None = Field(None, min_length=16)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class TierEndpoint(_Group):
    """Where one storage tier lives; empty fields fall back to the default MinIO endpoint."""

    bucket: str
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: SecretStr | None = None
    secure: bool = False


def _tier(bucket: str) -> TierEndpoint:
    return TierEndpoint(bucket=bucket)


class IngestRetention(_Group):
    """How long objects may stay in the ingest bucket when no save takes them away: S3
    lifecycle expiration rules that bootstrap sets on the bucket (docs/storage-tiering.md).
    A saved slide's upload and LR are deleted by the save (after the HR cut, if any) at once."""

    # scans/ and lr-staging/: a refused scan, kept for the operator; a pass whose save or HR
    # cut never finished (dead-lettered) is removed then too.
    unsaved_days: int = Field(14, ge=1)
    # qc/: QC reports and overlays (``slidestream slide`` shows the report while it is kept).
    qc_report_days: int = Field(30, ge=1)


class StorageSettings(_Group):
    host: str = LOOPBACK
    port: int = Field(19000, ge=1, le=65535)
    console_port: int = Field(19001, ge=1, le=65535)
    # Credentials of the default endpoint. Unset: the install's own random pair, made once in
    # ``<state_dir>/secrets/storage-root.key`` (mode 0600), which the local MinIO runs with; there
    # is no built-in pair. Read them through ``credentials()``, never these fields.
    access_key: str | None = Field(None, min_length=3)
    secret_key: SecretStr | None = Field(None, min_length=8)
    secure: bool = False
    region: str = "us-east-1"
    ingest: TierEndpoint = _tier("slidestream-ingest")
    recent: TierEndpoint = _tier("slidestream-recent")
    mid: TierEndpoint = _tier("slidestream-mid")
    long: TierEndpoint = _tier("slidestream-long")
    hr_cache: TierEndpoint = _tier("slidestream-hr-cache")
    mirror: TierEndpoint = _tier("slidestream-mirror")
    ingest_retention: IngestRetention = IngestRetention()
    # Where the install's own key pair lives (``Settings`` sets ``<state_dir>/secrets``).
    _secrets_dir: Path | None = PrivateAttr(None)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def with_secrets_dir(self, directory: Path) -> StorageSettings:
        copy = self.model_copy()
        copy._secrets_dir = directory
        return copy

    def credentials(self, tier: TierEndpoint | None = None) -> tuple[str, SecretStr]:
        """The effective (access key, secret key) of ``tier``'s endpoint (the default endpoint
        when None), the one place that decides it: a tier's own credentials, else the configured
        ones, else the install's own pair (made on first use)."""
        access = tier.access_key if tier is not None else None
        secret = tier.secret_key if tier is not None else None
        access = access or self.access_key
        secret = secret or self.secret_key
        if access is None or secret is None:
            if self._secrets_dir is None:
                raise ValueError("storage credentials are not configured (storage.access_key, "
                                 "storage.secret_key) and no state directory holds the install's own")
            own_access, own_secret = storage_key_pair(self._secrets_dir)
            access, secret = access or own_access, secret or own_secret
        return access, secret

    def tiers(self) -> dict[str, TierEndpoint]:
        return {
            "ingest": self.ingest,
            "recent": self.recent,
            "mid": self.mid,
            "long": self.long,
            "hr_cache": self.hr_cache,
            "mirror": self.mirror,
        }


class MongoSettings(_Group):
    host: str = LOOPBACK
    port: int = Field(27117, ge=1, le=65535)
    database: str = "slidestream"
    url: str | None = Field(None, description="full MongoDB URL; overrides host/port (production)")
    # Storage of the local FerretDB: "postgresql" (a private PostgreSQL cluster under the state
    # dir on loopback ``postgres_port``, password-protected; FerretDB passes the catalog
    # client's user and password through to it) or "sqlite" (files under the state dir; no
    # credentials; only ``_id`` lookups use an index). PostgreSQL is the default: the README's
    # catalog bench (lookups in ms at 10^6 images, seconds on SQLite at 2 x 10^4) and sign-in.
    backend: Literal["sqlite", "postgresql"] = "postgresql"
    postgres_port: int = Field(27118, ge=1, le=65535)
    user: str = Field("slidestream", pattern=r"^[a-z][a-z0-9_]{2,62}$")
    # Unset: the install's own password, made once in ``<state_dir>/secrets/catalog-db.key``.
    password: SecretStr | None = Field(None, min_length=16)
    _secrets_dir: Path | None = PrivateAttr(None)

    @property
    def point_queries(self) -> bool:
        """Whether many equality queries beat one ``$in``: on FerretDB's PostgreSQL backend an
        equality uses an index and an ``$in`` scans the collection; on its SQLite backend
        every non-``_id`` query scans, so one ``$in`` scan beats one scan per value; MongoDB
        (``url``) serves an ``$in`` from its index in one round trip."""
        return self.url is None and self.backend == "postgresql"

    def with_secrets_dir(self, directory: Path) -> MongoSettings:
        copy = self.model_copy()
        copy._secrets_dir = directory
        return copy

    def credentials(self) -> tuple[str, SecretStr] | None:
        """(user, password) the catalog client signs in with: on the PostgreSQL backend (the
        install's own password unless configured); None for SQLite and for ``url``, which
        carries its own credentials."""
        if self.url is not None or self.backend != "postgresql":
            return None
        if self.password is not None:
            return self.user, self.password
        if self._secrets_dir is None:
            raise ValueError("mongo.password is not configured and no state directory holds the install's own")
        from core.secrets import install_secret

        secret = install_secret(self._secrets_dir, "catalog-db.key", nbytes=24)
        return self.user, SecretStr(secret.hex())

    @property
    def uri(self) -> str:
        return self.url or f"mongodb://{self.host}:{self.port}/"


# Steps of a tier move at which a test can make the process exit (crash-safety tests).
MoveFaultPoint = Literal["after_plan", "after_copy", "after_verify", "after_catalog_update",
                         "after_delete", "after_publish"]


class TieringSettings(_Group):
    """Rules and timing of the tier scheduler (SPEC 2, schedule)."""

    # LR images of patients not in hospital move mid -> long once unused this long.
    age_limit_days: int = Field(365, ge=1)
    # Idle-time sweep: how often the leader worker looks for due moves, and how many per run.
    sweep_interval_s: float = Field(300.0, gt=0)
    sweep_batch: int = Field(500, ge=1)
    # The sweep runs only while these topics are quiet (no new messages, no consumer lag).
    quiet_topics: tuple[str, ...] = ("slide.scanned", "slide.qc_passed", "upscale.requested")
    # A pending move untouched this long is taken over (its worker is presumed dead).
    stale_move_s: float = Field(120.0, gt=0)
    # A worker holds a lease on the image it moves, renewed every third of this; a dead
    # worker's move is taken over once its lease ran out.
    move_lease_s: float = Field(30.0, gt=0)
    # HR tiles of patients not in hospital are dropped after this long without access.
    hr_idle_evict_h: float = Field(24.0, ge=0)
    # Retrieval waits this long for ``upscale.done`` before answering with LR.
    upscale_timeout_s: float = Field(30.0, gt=0)
    # Testing only: the process exits (os._exit) when a tier move reaches this step.
    fault_at: MoveFaultPoint | None = None


class HisSettings(_Group):
    """Hospital information system adapter: HL7 v2 over MLLP, and a JSON HTTP endpoint."""

    host: str = LOOPBACK
    mllp_port: int = Field(12575, ge=1, le=65535)
    http_port: int = Field(18085, ge=1, le=65535)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    # An MLLP connection silent this long is closed (HIS interfaces reconnect on demand).
    mllp_idle_timeout_s: float = Field(300.0, gt=0)
    # MLLP has no authentication of its own: only these peers (addresses or CIDR networks) may
    # connect; a connection from anywhere else is closed before anything is read from it.
    mllp_allowed_peers: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # JSON endpoint: each sender's API key, kept as the SHA-256 hex digest of the key it presents
    # as ``Authorization: Bearer <key>`` (``slidestream his key --new SENDER`` makes one). Empty:
    # only the install's own key, made once in ``<state_dir>/secrets/his-api.key`` (mode 0600;
    # ``slidestream his key`` shows it). There is no built-in key.
    api_keys: dict[str, str] = Field(default_factory=dict)
    # MLLP over TLS (as e.g. Mirth Connect offers it): the listener's certificate chain and key
    # (PEM files). With mllp_tls_client_ca, a client must also present a certificate signed by
    # that CA (mutual TLS) before anything is read. Unset: plain TCP (loopback or a closed network).
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_client_ca: Path | None = None

    @model_validator(mode="after")
    def _tls_files(self) -> HisSettings:
        if (self.mllp_tls_cert is None) != (self.mllp_tls_key is None):
            raise ValueError("his.mllp_tls_cert and his.mllp_tls_key go together")
        if self.mllp_tls_client_ca is not None and self.mllp_tls_cert is None:
            raise ValueError("his.mllp_tls_client_ca needs his.mllp_tls_cert and his.mllp_tls_key")
        return self

    @field_validator("mllp_allowed_peers")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError("each entry must be an IP address or CIDR network") from None
        return value

    @field_validator("api_keys")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        for sender, digest in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", sender):
                raise ValueError("sender names are 1-64 letters, digits, '_', '.' or '-'")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("each key is given as its SHA-256 digest (64 lowercase hex digits), never the key")
        return value

    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in self.mllp_allowed_peers)


class QcAgentSettings(_Group):
    """The QC agent (agents/qc.py): how a scan is judged before its LR may be stored."""

    # sampled: a fraction of the tissue tiles (quality.config.SamplingConfig); full: every tile.
    mode: Literal["sampled", "full"] = "sampled"
    # Judge the scan at its native resolution (the thresholds were tuned there, and defocus is
    # still visible) or the LR image that will be stored.
    judge: Literal["scan", "lr"] = "scan"
    # quality.QcConfig as a JSON or YAML file (thresholds, reference image, normalisation).
    config_file: Path | None = None
    # Standard (reference) H&E image for the colour-cast check; overrides config_file's.
    reference_image: Path | None = None
    # Colour-normalise the LR toward the reference before it is stored.
    normalise: bool = False
    # LR tile codec (docs/rate-distortion.md). AVIF q70 is the default since the fourth run of the
    # study: stored 5x + SR then beats the best 40x codec at equal bytes, in ~30 % fewer bytes than
    # JPEG XL d1 (the default before) for ~0.2 dB less PSNR after SR. TIFF has no AVIF value, so
    # such files carry a private one and only slidestream's tile reader (tifffile + imagecodecs, by
    # byte range) opens them, as with "jpegxl" (OpenSlide and browsers read neither). "jpeg" (q90
    # 4:4:4) keeps LR files that any TIFF viewer opens; "zstd" stores them lossless (~4x JPEG q90).
    lr_compression: Literal["jpeg", "jpegxl", "avif", "zstd"] = "avif"
    # AVIF quality (0-100) when lr_compression is "avif": 80 gives the SR fidelity of JPEG XL d1 in
    # ~12 % fewer bytes; lower saves more bytes and loses fidelity (the study's table).
    lr_avif_quality: int = Field(70, ge=0, le=100)
    # The lab's colour standard (quality/lab_standard.py): starts as the shipped standard (or the
    # config file's colour.standard_path) and learns from every slide that passes cleanly; every
    # QC worker on the host shares it. Default ``<state_dir>/qc/lab-colour-standard.json``;
    # relative: from the project root. Delete the file to reset the lab to its seed.
    lab_colour_standard: Path | None = None
    # False: stop learning (slides are still judged against the lab file as it stands).
    learn_colour_standard: bool = True


class ComputeSettings(_Group):
    """The compute service (agents/upscale.py, compute/): model, batching, leases, backpressure."""

    # model_zoo model name ("default": its default); "bicubic": interpolation, no model.
    model: str = "default"
    device: str = "cpu"
    # How x2 (10x views of a 5x slide) is answered: the model's x2 stage, its x4 output averaged
    # by 2, or Lanczos. None: the registry's choice for the model (Lanczos for the default: on
    # stored LR its x2 stage is 0.39 dB better but the dearest scale per pixel; "model" pays off
    # on a GPU worker; model_zoo/MODEL_CARD.md, "x2").
    x2_path: Literal["model", "x4", "lanczos"] | None = None
    threads: int = Field(1, ge=1, le=256)  # torch intra-op threads per worker process
    # Tiles per batch: neighbours in a batch run as a few large LR windows (compute.blocks), so a
    # larger batch wastes less on context margins; a batch is also the preemption granularity
    # (about 0.5 s of work at x8 on 2 CPU threads for 24 tiles).
    max_batch: int = Field(24, ge=1, le=256)
    # Interactive batches: a 1920x1080 viewport at 40x is 40 tiles, 70 with its one-tile prefetch
    # ring; one batch of as few windows as memory allows (a pathologist waits for all of them
    # anyway, and each window pays the context margin once; lower classes keep max_batch).
    interactive_max_batch: int = Field(72, ge=1, le=256)
    # LR context read around each window. None (default): the model's measured cap from the
    # registry (model_zoo.registry ModelSpec.margin_cap: 10 px for the default, which keeps every
    # output value within one 8-bit level of its full 20-px margin's at x2/x4/x8 on real H&E;
    # tests/unit/test_compute_margin.py keeps it true on a grid of windows), or its full margin
    # where it has none. Each window pays it on every side. A number overrides the registry for
    # every model.
    max_margin: int | None = Field(None, ge=0)
    lease_ttl_s: float = Field(120.0, gt=0)  # a dead worker's in-flight tiles free up after this
    max_tiles_per_request: int = Field(1024, ge=1)  # larger work: whole-slide generation (chunked)
    # Queued tiles of one priority class at which a worker pauses that class's partitions
    # (bounded prefetch; the rest waits in Kafka for whichever worker is free).
    prefetch_tiles: int = Field(64, ge=1)
    interactive_prefetch_tiles: int = Field(512, ge=1)
    wholeslide_chunk_tiles: int = Field(32, ge=1, le=1024)  # tiles per fan-out message
    # A computed tile box-downsampled to the stored magnification and compared with the stored
    # LR (compute.consistency, PSNR): below this it is counted in upscale.done and flagged in the
    # viewer. Measured per 256-px tile on the 44 MoNuSeg 40x images (LR = area downsampling): the
    # shipped model's worst tile is 32.3 dB at x8 from a JPEG q90 LR (the default storage; 38.0
    # lossless; x4 33.5, x2 37.3), the bicubic fallback's 28.9; a tile misplaced by one LR pixel
    # reaches at most 24.6, a neighbour's 19.2, blank glass 11. 28 dB sits between the two: no
    # normal tile of either upscaler is flagged, every misplaced one is (docs/viewer.md).
    consistency_threshold_db: float = Field(CONSISTENCY_THRESHOLD_DB, gt=0, le=99)


class ViewerSettings(_Group):
    """The diagnosis viewer (viewer/): tile API, search, reports, sign-in."""

    host: str = LOOPBACK
    port: int = Field(18480, ge=1, le=65535)
    # Key that signs the viewer's bearer tokens (HS256, at least 32 characters). Unset: a random
    # key is made once per install in ``<state_dir>/secrets/viewer-token.key`` (mode 0600); there is
    # no built-in key. Several viewer replicas must share one key: set it here.
    token_secret: SecretStr | None = Field(None, min_length=32)
    token_ttl_s: int = Field(900, ge=60, le=86_400)  # short-lived; the UI renews while in use
    # Failed sign-ins per user name and per client address within the window before refusing (429).
    login_max_failures: int = Field(5, ge=1)
    login_window_s: float = Field(300.0, gt=0)
    # Magnification the HR pyramid reaches (the LR magnification times 2, 4 or 8).
    target_magnification: float = Field(40.0, gt=0)
    # An on-demand tile request nobody waits for after this long is dropped by compute.
    tile_deadline_s: float = Field(20.0, gt=0)
    lr_tile_quality: int = Field(90, ge=50, le=100)  # JPEG quality of tiles cut from the LR pyramid
    # hr-cache tiles kept in the viewer's memory (recently read, prefetched, or just computed for
    # a slide someone has open): a hit costs no object-store round trip. 0: none.
    hr_memory_mb: int = Field(128, ge=0, le=1 << 16)
    # When a slide is opened, its LR levels are cut ahead from the smallest up while they fit
    # this many tiles in all (the overview a reader sees first; on a small slide every LR level).
    precut_tiles: int = Field(256, ge=0, le=100_000)


class DistributionSettings(_Group):
    """Distribution of new exams to reading terminals (distribution/, SPEC 2)."""

    # The policy (TOML or YAML, validated by distribution.policy): task classes by body part,
    # grace period, retention. Unset: the built-in policy (every exam to "general" terminals).
    # Re-read when the file changes; an invalid edit is refused and the last good policy kept.
    policy_file: Path | None = None
    # How often the sweep looks for silent terminals, waiting exams and final reports.
    sweep_interval_s: float = Field(10.0, gt=0)
    # Tiles per pre-computation request (upscale.requested at distribution priority).
    chunk_tiles: int = Field(64, ge=1, le=1024)
    # An assigned exam whose computed tiles have not grown for this long while some are
    # missing gets them asked for again (a lost or skipped pre-computation).
    stall_s: float = Field(60.0, gt=0)


class TerminalSettings(_Group):
    """The terminal agent on a reading workstation (``slidestream terminal``)."""

    # The diagnosis system's viewer service the terminal talks to (its terminal API).
    server_url: str = Field("http://127.0.0.1:18480", pattern=r"^https?://")
    # The local cache of HR tiles (relative: under the state directory).
    cache_dir: Path = Path("terminal-cache")
    max_cache_bytes: int = Field(20 << 30, ge=1 << 20)  # bounded: the oldest finished exams go first
    min_free_bytes: int = Field(2 << 30, ge=0)  # the download stops before the disk has less free
    retention_days: float = Field(14.0, gt=0)  # local copies older than this are deleted
    # The loopback port the pathologist's browser uses (high-resolution reading mode).
    host: str = LOOPBACK
    port: int = Field(18490, ge=1, le=65535)
    heartbeat_s: float = Field(15.0, gt=0)
    poll_s: float = Field(3.0, gt=0)  # how often assignments and not-yet-ready tiles are checked
    download_concurrency: int = Field(8, ge=1, le=64)


class _UnknownPrefixedEnv(PydanticBaseSettingsSource):
    """Hands ``SLIDESTREAM_*`` variables that name no setting to validation, so that
    ``extra="forbid"`` rejects them by name (pydantic-settings otherwise ignores unknown
    variables of the process environment, and a typo would silently keep the default)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[object, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, object]:
        prefix = str(self.config.get("env_prefix", "")).lower()
        delimiter = self.config.get("env_nested_delimiter") or "__"
        known = set(self.settings_cls.model_fields)
        unknown: dict[str, object] = {}
        for name, value in os.environ.items():
            lowered = name.lower()
            if prefix and lowered.startswith(prefix):
                key = lowered[len(prefix):]
                if key.split(delimiter)[0] not in known:
                    unknown[key] = value
        return unknown


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLIDESTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        # In .env, only SLIDESTREAM_* lines are ours (unknown ones are rejected); other
        # applications' variables in a shared file are left alone.
        dotenv_filtering="match_prefix",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                _UnknownPrefixedEnv(settings_cls))

    # Where infra/ keeps server data and logs (relative: from the project root), and where
    # built servers are cached.
    state_dir: Path = Path("var")
    build_cache: Path = Path.home() / ".cache" / "slidestream"
    # Local exports go only below this directory (relative: from the project root).
    export_root: Path = Path("exports")
    shared_data: Path = PROJECT_ROOT.parent / "shared" / "data"

    kafka: KafkaSettings = KafkaSettings()
    storage: StorageSettings = Field(StorageSettings(), validate_default=True)  # see _install_secrets
    mongo: MongoSettings = Field(MongoSettings(), validate_default=True)  # see _install_secrets
    tiering: TieringSettings = TieringSettings()
    his: HisSettings = HisSettings()
    compute: ComputeSettings = ComputeSettings()
    qc: QcAgentSettings = Field(QcAgentSettings(), validate_default=True)  # validated: see _lab_standard_path
    viewer: ViewerSettings = ViewerSettings()
    distribution: DistributionSettings = DistributionSettings()
    terminal: TerminalSettings = TerminalSettings()

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    # Key of the patient_ref pseudonym in logs and dead letters (HMAC-SHA256); the same value on
    # every worker lets operators follow one patient across processes. Unset: the install's own
    # random salt, made once in ``<state_dir>/secrets/log-salt.key`` (mode 0600); there is no
    # built-in salt, and the public one of earlier versions is refused.
    log_salt: SecretStr | None = Field(None, min_length=16)
    # Faust application id (consumer group prefix); several workers with one id share work.
    app_id: str = Field("slidestream", pattern=r"^[a-z][a-z0-9_.-]{1,63}$")
    # LR storage target magnification; scans above it are downsampled (SPEC 1).
    lr_magnification: float = Field(5.0, gt=0)

    @field_validator("state_dir", "export_root")
    @classmethod
    def _from_project_root(cls, value: Path) -> Path:
        """Anchored at the project, not the shell's directory, so that status, logs and down
        find the same stack from anywhere."""
        return value if value.is_absolute() else PROJECT_ROOT / value

    @field_validator("log_salt")
    @classmethod
    def _private_log_salt(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == _PUBLIC_LOG_SALT:
            raise ValueError("log_salt is the public default of earlier versions; set a private value "
                             "or leave it unset for the install's own")
        return value

    @field_validator("storage", "mongo")
    @classmethod
    def _install_secrets(cls, value: StorageSettings | MongoSettings, info: ValidationInfo,
                         ) -> StorageSettings | MongoSettings:
        """Unconfigured storage credentials and catalog password are the install's own, kept
        under the state dir."""
        state_dir = info.data.get("state_dir")
        if state_dir is None or value._secrets_dir is not None:
            return value
        return value.with_secrets_dir(state_dir / "secrets")

    @field_validator("qc")
    @classmethod
    def _lab_standard_path(cls, value: QcAgentSettings, info: ValidationInfo) -> QcAgentSettings:
        """qc.lab_colour_standard made absolute like state_dir (state_dir is validated before qc)."""
        state_dir = info.data.get("state_dir")
        path = value.lab_colour_standard
        if path is None and state_dir is not None:
            path = state_dir / "qc" / "lab-colour-standard.json"
        elif path is not None and not path.is_absolute():
            path = PROJECT_ROOT / path
        return value.model_copy(update={"lab_colour_standard": path})

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = [self.kafka.port, self.kafka.controller_port, self.storage.port,
                 self.storage.console_port, self.mongo.port,
                 self.mongo.postgres_port, self.his.mllp_port, self.his.http_port, self.viewer.port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"service ports must be distinct, got {ports}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
