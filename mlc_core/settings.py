"""The one settings object of mlc.

Every value comes from an ``MLC_`` environment variable (nested sections use ``__``, so
``MLC_TRAINING__EPOCHS=5`` sets ``settings.training.epochs``) or its default. Entry points (the
CLI, the flows) call :func:`load_settings` once and pass what they need down as arguments;
nothing in the library reads the environment by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlc_core.errors import SettingsError, redact_password

ENV_PREFIX = "MLC_"
# Pillow's own default limit (about 89.5 megapixels); above it an image is treated as a
# decompression bomb rather than decoded.
PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


# The backbones halve an image's side five times; sides that are multiples of this keep every
# feature map aligned.
SIZE_STEP = 32


class TrainingSettings(BaseModel):
    """How models are trained, evaluated and promoted."""

    # A misspelt setting (MLC_TRAINING__EPOCS) is refused, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    backbone: str = Field("compact_cnn", description="backbone name from the registry")
    weights: str = Field(
        "none", description="'none', 'imagenet' (downloads; needs a network) or a weights file path"
    )
    image_size: int = Field(128, ge=32, le=1024, description="square input side in pixels")
    # Training crops zoom in (min_crop_fraction), so objects look larger in training than in
    # a whole image at the same size; scoring at a larger size than training evens that out
    # (Touvron et al., "Fixing the train-test resolution discrepancy", 2019). On natural_scene
    # a model trained at 128 px scored at 160 px gained about 0.01 test mAP (README); a side
    # that is not a multiple of 32 (144) lost: the backbone halves it five times.
    scoring_scale: float = Field(
        1.25,
        ge=1,
        le=4,
        description=(
            "the trained model scores images at image_size x this, rounded down to a "
            "multiple of 32 (never below image_size); 1 scores at the training size"
        ),
    )
    # On natural_scene (1,300 training images from scratch) validation mAP still climbed at
    # epoch 80 of 80 as the cosine schedule came down; 160 epochs gained 0.017 test mAP over
    # 80 and 200 another 0.009 validation mAP (3 seeds each, README), in about 8 minutes on 2
    # idle CPU cores: more than a 160 px input did.
    epochs: int = Field(200, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(2e-3, gt=0, lt=1)
    dropout_rate: float = Field(0.3, ge=0, lt=1)
    # The model overfits natural_scene's 1,300 training images (train mAP ~0.99); stronger
    # crops (0.35 of a side, not 0.5) and more mixup (alpha 0.4, not 0.2) raised its test
    # mAP (README). Where a crop can cut a tagged object out (the demo's shapes), 0.5 / 0.2
    # learn faster.
    min_crop_fraction: float = Field(
        0.35, gt=0, le=1, description="smallest side of a training crop, as a share of the image"
    )
    mixup_alpha: float = Field(
        0.4, gt=0, le=10, description="Beta(alpha, alpha) of the mixup shares; larger blends more"
    )
    seed: int = 1234
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    min_positives: int = Field(3, ge=1, description="classes with fewer positives are left out")
    loss: Literal["bce", "weighted_bce", "focal", "asymmetric"] = "bce"
    threshold_strategy: Literal["f1", "precision"] = "f1"
    target_precision: float = Field(0.9, gt=0, le=1)
    # The learning rate follows a cosine decay, and validation mAP climbs most in the last
    # third of the epochs as it comes down; a plateau of 10 epochs mid-run is common (with
    # 80 epochs and patience 10, natural_scene stopped at epoch 32, 0.05 validation mAP
    # short of the last epochs).
    early_stopping_patience: int = Field(25, ge=1)
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description=(
            "the most a training may take, from reading the images to the best checkpoint: "
            "epochs are planned from the first ones' duration to fit it; unset for no limit"
        ),
    )
    semi_supervised: bool = Field(
        False,
        description=(
            "also learn from the unlabelled images under the images prefix: a teacher's "
            "pseudo-labels train students in turn (noisy student)"
        ),
    )
    semi_supervised_teacher: Literal["first_model", "champion"] = Field(
        "first_model",
        description=(
            "who gives pseudo-labels: a first model trained on the labels, or the champion "
            "(when its weights fit the training image size; it may have trained on today's "
            "validation images, which makes its confidence cuts optimistic)"
        ),
    )
    # On natural_scene at 25 % labels (200 epochs) the teacher's probabilities as targets for
    # every unlabelled image gained 0.038 test mAP over the labels alone (one student, 3 seeds),
    # where confident 1 / 0 pseudo-labels lost 0.027 (160 epochs, one seed): the soft targets
    # keep what the teacher is unsure of as a blend, not a guess or a gap.
    semi_supervised_targets: Literal["soft", "confident"] = Field(
        "soft",
        description=(
            "what the student learns from an unlabelled image: the teacher's probabilities "
            "(soft), or 1 / 0 only where the teacher is confident per class (confident)"
        ),
    )
    # On natural_scene at 25 % labels (200 epochs, 128 px) one student gained 0.038 test mAP
    # over the labels alone (3 seeds) and a second one, taught by the first, 0.040 (2 seeds,
    # +0.012 and +0.014 on the first): a student learns more than its teacher knew, so it
    # teaches better (noisy student).
    semi_supervised_rounds: int = Field(
        2,
        ge=1,
        le=5,
        description=(
            "students trained one after another, each taught by the one before (the first "
            "by the teacher); each costs about one training on all the images"
        ),
    )
    semi_supervised_max_images: int = Field(
        20_000, ge=1, description="the most unlabelled images one training decodes and uses"
    )
    promotion_margin: float = Field(0.005, ge=0, le=1)
    max_class_ap_drop: float = Field(0.05, ge=0, le=1)

    @property
    def scoring_image_size(self) -> int:
        """The side a model trained with these settings scores at (see ``scoring_scale``)."""
        larger = int(self.image_size * self.scoring_scale) // SIZE_STEP * SIZE_STEP
        return max(self.image_size, larger)


class ScoringSettings(BaseModel):
    """How images are read, decoded and scored."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, le=4096)
    inference_batch_size: int = Field(
        16,
        ge=1,
        le=4096,
        description=(
            "images per forward pass of the model; a batch is scored in passes of this many "
            "(small passes keep the model's activations in the CPU's caches)"
        ),
    )
    inference_threads: int = Field(
        1,
        ge=0,
        le=256,
        description=(
            "TensorFlow threads of a scoring process's forward passes (0: TensorFlow's "
            "default, one per core); in force where scoring is the process's first TensorFlow "
            "work"
        ),
    )
    read_workers: int = Field(16, ge=1, le=256)
    listing_workers: int = Field(
        4,
        ge=1,
        le=64,
        description="prefixes discovery lists side by side (each S3 page is one request)",
    )
    max_image_pixels: int = Field(PILLOW_DEFAULT_MAX_PIXELS, ge=1)
    shard_size: int = Field(
        2000,
        ge=1,
        description=(
            "pending images per task (shard) of the score flow; thousands, as a Prefect task "
            "costs about a second"
        ),
    )
    claim_lease_seconds: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description=(
            "a scoring run silent for this long is dead and its claimed images may be taken "
            "over; every run sharing a database should use the same value"
        ),
    )
    max_object_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description=(
            "larger objects are recorded as failures, from the listed size before reading and "
            "from the bytes while reading"
        ),
    )
    max_abandoned_claims: int = Field(
        3,
        ge=1,
        description=(
            "an image whose claim was taken over from dead runs this many times (it killed "
            "its scorer) is recorded as failed instead of claimed again"
        ),
    )
    max_retire_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "a complete listing retires the images it did not see only while they are at "
            "most this share of the prefix's known images (else it retires none and says so)"
        ),
    )
    s3_reader: Literal["obstore", "boto3"] = Field(
        "obstore",
        description=(
            "who reads single objects from S3: obstore (Rust; about a quarter of boto3's "
            "client CPU per GET) with the endpoint, credentials and errors boto3 resolves, or "
            "boto3 itself; listing and writes always use boto3"
        ),
    )
    top_class_fallback: bool = Field(
        False,
        description=(
            "an image where no class reaches its threshold gets its most probable class as "
            "its one tag; only for collections where every image shows at least one class"
        ),
    )


class OrchestrationSettings(BaseModel):
    """When the scheduled flows run, where their tasks run, and when a nightly run retrains."""

    model_config = ConfigDict(validate_default=True, extra="forbid")

    nightly_cron: str | None = Field(
        "0 2 * * *",
        description=(
            "cron of the nightly run (score new images, retrain if enough new labels); "
            "empty: no schedule"
        ),
    )
    retrain_cron: str | None = Field(
        "0 3 * * 0", description="cron of the weekly retrain; empty: no schedule"
    )
    score_cron: str | None = Field(
        None,
        description=(
            "cron of the plain score deployment (e.g. hourly); empty: run from the UI only"
        ),
    )
    timezone: str = Field("UTC", description="IANA time zone the cron schedules are read in")
    task_runner: Literal["default", "dask"] = Field(
        "default", description="'default' runs tasks in the flow's process; 'dask' on a cluster"
    )
    dask_address: str | None = Field(
        None, description="the dask.distributed scheduler, e.g. tcp://scheduler:8786"
    )
    retrain_min_new_labelled_images: int = Field(
        50,
        ge=1,
        description=(
            "a nightly run retrains when at least this many images got new or changed labels "
            "since the last training run"
        ),
    )
    rescore_after_promotion: bool = Field(
        True, description="after a retrain promotes a new champion, rescore older rows with it"
    )
    keep_prefect_server: bool = Field(
        True,
        description=(
            "without PREFECT_API_URL, run flows on a local Prefect server kept between "
            "commands (started by the first); false: a temporary server per command"
        ),
    )
    transient_retries: int = Field(
        3,
        ge=0,
        le=3,
        description=(
            "how many times a task retries after an unreachable store or database (waiting "
            "10 s, 1 min, 5 min); 0 fails at once"
        ),
    )

    @field_validator("nightly_cron", "retrain_cron", "score_cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # The full check is Prefect's, when the deployments are built; five fields catch the
        # usual slip (a quoted schedule with a missing or extra field) at startup.
        if len(value.split()) != 5:
            raise ValueError(
                "expected a cron expression of five fields (minute hour day month weekday), "
                "e.g. '0 2 * * *', or an empty value for no schedule"
            )
        return " ".join(value.split())

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "expected an IANA time zone name such as UTC or Europe/Berlin"
            ) from None
        return value

    @field_validator("dask_address")
    @classmethod
    def _check_dask_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.strip():
            value = None
        if value is None and info.data.get("task_runner") == "dask":
            raise ValueError(
                "the dask task runner needs the scheduler's address, e.g. "
                "MLC_ORCHESTRATION__DASK_ADDRESS=tcp://scheduler:8786"
            )
        return value


class DriftSettings(BaseModel):
    """When a scoring run's tag rates count as drifted from the champion's validation rates."""

    model_config = ConfigDict(validate_default=True, extra="forbid")

    psi_limit: float = Field(
        0.2,
        gt=0,
        description=(
            "a class whose tag rate in a run is this far from its rate on the champion's "
            "validation images (population stability index) is flagged; 0.1 to 0.25 is "
            "the usual band of a moderate shift"
        ),
    )
    min_images: int = Field(
        100,
        ge=1,
        description="runs that scored fewer images are not checked: their rates are noise",
    )


class UISettings(BaseModel):
    """The web page of ``mlc ui``: where it listens, who may use it, its thumbnail cache."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1",
        description="address to bind; any other than loopback needs MLC_UI__TOKEN",
    )
    port: int = Field(8765, ge=1, le=65535)
    token: SecretStr | None = Field(
        None,
        description=(
            "shared secret every request but /healthz must carry (Authorization: Bearer, or "
            "?token= once, which sets a cookie); required off loopback"
        ),
    )
    thumbnail_cache_mb: int = Field(
        256, ge=1, description="disk bound of the thumbnail cache under MLC_HOME/thumbnails"
    )
    thumbnail_size: int = Field(256, ge=32, le=2048, description="longest side of a thumbnail")
    # Decoding is CPU and memory bound: a page of 200 thumbnails decodes this many at a time,
    # so memory stays bounded whatever the page size.
    thumbnail_workers: int = Field(2, ge=1, le=64, description="thumbnails decoded at once")

    @field_validator("token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value


class Settings(BaseSettings):
    """All of mlc's settings; see the README's settings table.

    Read from ``MLC_`` environment variables, then from a ``.env`` file in the working
    directory (a variable set in the environment wins over the file).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(Path("mlc-data"), description="where the embedded defaults keep state")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in home")
    storage_url: str | None = Field(
        None, description="s3://bucket/prefix or a local folder; default a folder in home"
    )
    images_prefix: str = Field("images/", description="where new images land in the store")
    labels_key: str = Field("labels/labels.csv", description="labels manifest in the store")
    training: TrainingSettings = TrainingSettings()
    scoring: ScoringSettings = ScoringSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()
    drift: DriftSettings = DriftSettings()
    ui: UISettings = UISettings()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "expected a SQLAlchemy URL such as sqlite:///path/mlc.db or "
                "postgresql+psycopg://user@host:5432/dbname"
            ) from None
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError("expected s3://bucket[/prefix] with a bucket name")
        elif parts.scheme not in ("", "file"):
            raise ValueError("expected s3://bucket[/prefix], file:///path or a folder path")
        return value

    @field_validator("images_prefix", "labels_key")
    @classmethod
    def _check_relative_key(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/") or "\\" in value:
            raise ValueError("expected a path relative to the store root, without '..'")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'mlc.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        """The store URL, defaulting to a local folder in ``home``."""
        if self.storage_url:
            return self.storage_url
        return str((self.home / "store").resolve())


def _env_name(location: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def _shown_value(location: tuple[Any, ...], value: Any) -> str:
    """The value as an error may show it: a database URL that is no URL at all is not shown,
    since where its password sits cannot be told."""
    if location == ("database_url",) and isinstance(value, str) and "://" not in value:
        return "(not shown: it is no URL, and may hold a password)"
    return repr(value)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with ``overrides`` taking precedence.

    Raises:
        SettingsError: one line per bad value, naming the variable, the value and what is
            expected.
    """
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            location = tuple(part for part in problem["loc"] if part != "__root__")
            value = problem.get("input")
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = "no such setting (misspelt?); the README's settings table lists them"
            shown = _shown_value(location, value)
            # A URL may carry a password; this line goes to terminals, run states and logs.
            lines.append(redact_password(f"{_env_name(location)}={shown}: {message}"))
        raise SettingsError("\n".join(lines)) from None
