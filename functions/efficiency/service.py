"""HTTP service for the sample-efficiency benchmark: extract features, update a linear head,
run the benchmark against the adam baseline.

Run it with ``uvicorn functions.efficiency.service:app`` (``make serve``).  The extractor and the target
task's features are loaded once at start-up; a request only reads them and builds its own
heads and seeded generators, so concurrent requests answer exactly as sequential ones.
Configuration comes from ``TRANSFER_SERVICE_*`` environment variables (see ``Settings``).
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..core.errors import DataError
from ..models.extractors import Extractor
from . import benchmark as se
from . import heads

MAX_CLASSES = 1000
MAX_FEATURE_DIM = 4096
MAX_IMAGE_SIDE = 4096

Method = Literal[tuple(heads.METHODS)]
Weights = tuple[list[list[float]], list[float]]


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class Settings:
    """What the service serves; each field can be set by ``TRANSFER_SERVICE_<FIELD>``."""

    folder: str = "MNIST"
    setup: str | None = None  # default: the folder's main setup
    task: str = "binary"  # "binary": the first two target classes; "all": every target class
    dataset: str | None = None  # with classes: any class list of any dataset
    classes: tuple | None = None  # comma separated in the environment, e.g. "0,1"
    extractor: str = "study"  # "study", "mobilenet_v2" or "resnet50"
    cut: int | None = None  # study extractor: number of conv blocks kept (default all)
    model: str | None = None  # study: a source model file; torchvision: its weights file
    input_size: int = 224  # torchvision extractors: side of the square input
    profile: str = "quick"  # which pretrained source model of the folder
    method: str = "slda"  # method used when a request names none
    pool: int | None = None  # at most this many training images to stream (default all)
    seed: int = 0  # seed of the heads built by update_weights
    max_body_bytes: int = 64 * 2 ** 20
    max_evaluations: int = 20000  # max_samples / evaluation_frequency allowed in one run_benchmark

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        values = {}
        for f in fields(cls):
            text = environ.get(f"TRANSFER_SERVICE_{f.name.upper()}")
            if text is None or text == "":
                continue
            try:
                if f.name == "classes":
                    values[f.name] = tuple(int(c) for c in text.split(","))
                elif f.name in ("cut", "input_size", "pool", "seed", "max_body_bytes", "max_evaluations"):
                    values[f.name] = int(text)
                else:
                    values[f.name] = text
            except ValueError as err:
                raise DataError(f"TRANSFER_SERVICE_{f.name.upper()}={text!r} is not valid ({err})") from err
        settings = cls(**values)
        if settings.method not in heads.METHODS:
            raise DataError(f"TRANSFER_SERVICE_METHOD={settings.method!r}; choose one of {sorted(heads.METHODS)}")
        return settings


@dataclass(frozen=True)
class ServiceState:
    """Everything a request reads: never written after start-up."""

    settings: Settings
    extractor: Extractor
    features: se.TaskFeatures
    task: se.TargetTask


def load_state(settings: Settings, log=print) -> ServiceState:
    """The extractor and the target features (extracted once, then read from the cache)."""
    extractor = se.build_extractor(settings.extractor, settings.model, settings.folder, settings.setup,
                                   settings.profile, settings.cut, settings.input_size, train_if_missing=False,
                                   log=log)
    task = se.target_task(settings.folder, settings.setup, settings.task, settings.dataset, settings.classes,
                          settings.pool)
    return ServiceState(settings, extractor, se.task_features(extractor, task, log=log), task)


# ----------------------------------------------------------------------------- request and response bodies

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def image_array(value) -> np.ndarray:
    """One request image as an (H, W, C) float32 array of 0..255.

    Converted by numpy straight from the parsed JSON: validating a 160 x 160 RGB image pixel by
    pixel as a pydantic union takes ten times longer than this.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise PydanticCustomError("image_ragged", "ragged or not numeric: every row must have "
                                  "the same length and every pixel the same number of channels") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise PydanticCustomError("image_shape", "shape {shape}; expected H x W or H x W x C "
                                  "with C = 1, 3 or 4", {"shape": list(array.shape)})
    height, width, _ = array.shape
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise PydanticCustomError("image_size", "size {height} x {width}; sides must be 1..{limit}",
                                  {"height": height, "width": width, "limit": MAX_IMAGE_SIDE})
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise PydanticCustomError("image_values", "pixel values must be numbers in 0..255")
    return array.astype(np.float32)


PIXEL_SCHEMA = {"type": "number", "minimum": 0, "maximum": 255}
Image = Annotated[np.ndarray, PlainValidator(image_array), WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"anyOf": [
        PIXEL_SCHEMA, {"type": "array", "minItems": 1, "maxItems": 4, "items": PIXEL_SCHEMA}]}},
    "description": "H x W (grey) or H x W x C (C = 1, 3, or 4 with alpha dropped) pixel values 0-255."})]


class ExtractRequest(Strict):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    images: list[Image] = Field(
        min_length=1,
        description="Images as nested lists, each H x W (grey) or H x W x C (C = 1, 3, or 4 with alpha "
                    "dropped), pixel values 0-255 as integers or floats; each image may have its own size.")


class ExtractResponse(BaseModel):
    features: list[list[float]] = Field(description="One feature vector per image, in request order.")


class UpdateRequest(Strict):
    features: list[list[float]] = Field(min_length=1, description="n rows of d numbers (d at most "
                                        f"{MAX_FEATURE_DIM}).")
    labels: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="n labels in 0..num_classes-1.")
    current_weights: Weights | None = Field(None, description="[W, b], W num_classes x d, b num_classes; "
                                            "null: start from the method's own initial head.")
    num_classes: int = Field(2, ge=2, le=MAX_CLASSES)
    method: Method | None = Field(None, description="Default: the service's configured method.")


class UpdateResponse(BaseModel):
    updated_weights: Weights = Field(description="[W, b] after learning from the batch.")


class BenchmarkRequest(Strict):
    custom_weights: Weights | None = Field(None, description="Initial head [W, b] of the custom method "
                                           "(num_classes x d, num_classes); null: the method's own.")
    batch_size: int = Field(1, ge=1, description="Samples per update.")
    max_samples: int = Field(100, ge=1, description="Samples streamed in all.")
    evaluation_frequency: int = Field(1, ge=1, description="Validation accuracy is measured each time this "
                                      "many more samples have been seen.")
    method: Method | None = Field(None, description="Custom method; default: the service's configured one.")
    seed: int = Field(0, ge=0, le=2 ** 63 - 1, description="Seeds the sample order and the heads' initialisation.")
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="Accuracy the milestone asks for.")
    window: int = Field(10, ge=1, description="Consecutive evaluations at or above threshold.")


class LearningCurves(BaseModel):
    samples: list[int]
    custom_acc: list[float]
    baseline_acc: list[float]


class FinalAccuracy(BaseModel):
    custom: float
    baseline: float


class BenchmarkResponse(BaseModel):
    custom_milestone: int | None = Field(description="Samples seen at the end of the first window of "
                                         "evaluations at or above threshold; null: never reached.")
    baseline_milestone: int | None
    relative_efficiency: float | None = Field(description="baseline_milestone / custom_milestone; null if "
                                              "either is null.")
    learning_curves: LearningCurves
    final_accuracy: FinalAccuracy


class TaskInfo(BaseModel):
    dataset: str
    classes: list[int]
    num_classes: int
    pool_size: int
    val_size: int


class ExtractorInfo(BaseModel):
    kind: str
    cut: int | None
    in_shape: list[int]
    feature_dim: int
    weights_sha256: str


class ServiceInfo(BaseModel):
    service: str
    description: str
    default_method: str
    methods: list[str]
    baseline: str
    task: TaskInfo
    extractor: ExtractorInfo
    docs: str


class Health(BaseModel):
    status: Literal["ok"]


class Message(BaseModel):
    detail: str


# ----------------------------------------------------------------------------- errors

def _field_error(field, message: str, index: int | None = None) -> RequestValidationError:
    loc = ("body", field) if index is None else ("body", field, index)
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


# What learning from extreme (finite) values can raise; the request's values are then to blame.
NUMERIC_ERRORS = (DataError, ValueError, FloatingPointError, np.linalg.LinAlgError, OverflowError)


def _checked(error: Exception, blame: str) -> RequestValidationError:
    """A 422 naming the field responsible: the one an InputError names, else ``blame``."""
    if isinstance(error, heads.InputError):
        return _field_error(error.field, str(error))
    return _field_error(blame, f"{blame}: the values given cannot be learnt from ({type(error).__name__}: "
                        f"{error}); they are too large: rescale them")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, with the field's path at the start of every message."""
    errors = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"] if part != "body")
        msg = str(error.get("msg", ""))
        errors.append({"loc": list(error["loc"]), "type": str(error.get("type", "value_error")),
                       "msg": msg if msg.startswith(path.split(".")[0]) else f"{path}: {msg}"})
    return JSONResponse({"detail": errors}, status_code=422)


class BodyLimit:
    """Answers 413 to request bodies over ``max_bytes``, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return (f"request body exceeds {self.max_bytes} bytes; send fewer or smaller images per request "
                f"(or raise TRANSFER_SERVICE_MAX_BODY_BYTES)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)


# ----------------------------------------------------------------------------- the app

DESCRIPTION = """\
Sample-efficiency benchmark for linear heads on frozen features.

**Images** (`/model/extract_features`): nested lists, each image H x W (grey) or H x W x C
(C = 1, 3, or 4 whose alpha channel is dropped), pixel values 0-255 as integers or floats; images
of one request may differ in size.  The extractor adapts each image to its own input: RGB is
turned into grey with the ITU-R BT.601 luma weights (0.299, 0.587, 0.114) when it expects one
channel, grey is repeated into three channels when it expects RGB, the image is resized to its
input size (bilinear with antialiasing), scaled to 0..1 and normalised with the mean and standard
deviation its weights were trained with.  A feature vector is the global average of the
extractor's last activation map.

**Heads** (`/model/update_weights`): a linear head `[W, b]` (`W` num_classes x d, `b`
num_classes) predicts `argmax(x W^T + b)`.  Methods: `adam` (the baseline: Dropout(0.2) ->
Linear, one Adam step with lr 1e-3 per batch), `ridge` (ridge regression on one-hot targets,
shrunk towards `current_weights`), `slda` (streaming LDA with an OAS-shrunk covariance), `ncm`
(nearest class mean), `logreg_refit` (logistic regression refitted on the batch).  This endpoint
keeps no state between calls: it learns from the batch it is given, starting from
`current_weights` (adam starts there, ridge shrinks towards it, the other methods keep its rows
for classes absent from the batch).

**Benchmark** (`/model/run_benchmark`): streams the service's target training samples (same
seeded order for both methods) in batches of `batch_size`, measures accuracy on the whole
validation set every `evaluation_frequency` samples and reports the milestone: samples seen at
the end of the first run of `window` consecutive evaluations at or above `threshold`.
`relative_efficiency = baseline_milestone / custom_milestone`.

Bad input gets a 422 naming the field (413 for bodies over the size limit).
"""

ERRORS = {413: {"model": Message, "description": "Request body over the size limit."}}


def create_app(settings: Settings | None = None, state: ServiceState | None = None) -> FastAPI:
    """The service for ``settings`` (default: from the environment); ``state`` skips loading."""
    settings = state.settings if state else settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        se.single_threaded_numerics()  # lasting BLAS limit, so that per-request limits restore to it
        if getattr(app.state, "service", None) is None:
            app.state.service = load_state(settings)
        yield

    app = FastAPI(title="Transfer-learning sample-efficiency benchmark", version="1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.service = state
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def current(request: Request) -> ServiceState:
        return request.app.state.service

    @app.get("/", response_model=ServiceInfo, summary="What this service is")
    def root(request: Request) -> ServiceInfo:
        s = current(request)
        return ServiceInfo(
            service="transfer-learning sample-efficiency benchmark",
            description="Counts how many streamed training samples a linear head on frozen features needs to "
                        "reach and keep the accuracy threshold, against the adam baseline. See /docs.",
            default_method=s.settings.method, methods=sorted(heads.METHODS), baseline=heads.BASELINE,
            task=TaskInfo(dataset=s.task.dataset, classes=list(s.task.classes), num_classes=s.features.num_classes,
                          pool_size=len(s.features.train_y), val_size=len(s.features.val_y)),
            extractor=ExtractorInfo(kind=s.extractor.kind, cut=s.extractor.cut, in_shape=list(s.extractor.in_shape),
                                    feature_dim=s.extractor.dim, weights_sha256=s.extractor.weights_sha256),
            docs="/docs")

    @app.get("/health", response_model=Health, summary="Liveness probe")
    def health() -> Health:
        return Health(status="ok")

    @app.post("/model/extract_features", response_model=ExtractResponse, responses=ERRORS,
              summary="Features of images under the service's frozen extractor")
    def extract_features(body: ExtractRequest, request: Request) -> ExtractResponse:
        return ExtractResponse(features=current(request).extractor.of_pixels(body.images).tolist())

    @app.post("/model/update_weights", response_model=UpdateResponse, responses=ERRORS,
              summary="Learn a linear head from one batch, starting from current_weights")
    def update_weights(body: UpdateRequest, request: Request) -> UpdateResponse:
        s = current(request)
        dim = len(body.features[0])
        if dim > MAX_FEATURE_DIM:
            raise _field_error("features", f"features have {dim} columns; at most {MAX_FEATURE_DIM} are accepted")
        try:
            with np.errstate(all="ignore"), se.single_threaded_numerics():
                head = heads.make_head(body.method or s.settings.method, dim, body.num_classes,
                                       init=body.current_weights, seed=s.settings.seed)
                W, b = head.partial_fit(body.features, body.labels).weights()
        except NUMERIC_ERRORS as err:
            raise _checked(err, "features") from err
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise _field_error("features", "the update overflowed: features or current_weights are too large; "
                               "rescale them")
        return UpdateResponse(updated_weights=(W.tolist(), b.tolist()))

    @app.post("/model/run_benchmark", response_model=BenchmarkResponse, responses=ERRORS,
              summary="Milestones of a method and of the adam baseline on the same seeded stream")
    def run_benchmark(body: BenchmarkRequest, request: Request) -> BenchmarkResponse:
        s = current(request)
        features = s.features
        protocol = se.Protocol(body.batch_size, body.max_samples, body.evaluation_frequency, body.threshold,
                               body.window)
        try:
            protocol.check(len(features.train_y))
            custom = heads.check_weights(body.custom_weights, features.num_classes, features.dim, "custom_weights")
        except heads.InputError as err:
            raise _checked(err, "custom_weights") from err
        if body.max_samples // body.evaluation_frequency > s.settings.max_evaluations:
            raise _field_error("evaluation_frequency", f"evaluation_frequency={body.evaluation_frequency} gives "
                               f"{body.max_samples // body.evaluation_frequency} evaluations; at most "
                               f"{s.settings.max_evaluations} per request: raise evaluation_frequency")
        try:
            with np.errstate(all="ignore"):
                result = se.compare_to_baseline(features, body.method or s.settings.method, protocol, body.seed,
                                                custom_weights=custom)
        except NUMERIC_ERRORS as err:
            raise _checked(err, "custom_weights") from err
        return BenchmarkResponse(**result)

    return app


app = create_app()
