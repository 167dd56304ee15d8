"""HTTP service for the sample-efficiency benchmark: extract features, update a linear head,
run the benchmark against the adam baseline.

Run it with ``uvicorn functions.efficiency.service:app`` (``make serve``).  The extractor and the target
task's features are loaded once at start-up; a request only reads them and builds its own
heads and seeded generators, so concurrent requests answer exactly as sequential ones.
Configuration comes from ``TRANSFER_SERVICE_*`` environment variables (see ``ServiceSettings``).
"""
from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Annotated, ClassVar, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictFloat, WithJsonSchema
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import get_setup
from ..core.constraints import Interval, Maybe, Options, Text, check_fields, declared, defaults
from ..core.errors import DataError
from ..models.extractors import Extractor
from . import benchmark as se
from . import heads

MAX_CLASSES = 1000
MAX_FEATURE_DIM = 4096
MAX_IMAGE_SIDE = 4096
# Magnitudes the heads learn from without overflow or a singular solve: features 1e6 (an extractor's
# features are averages of activations, far smaller), weights 1e30 (above any head learnt from such features).
MAX_FEATURE_VALUE = 1e6
MAX_WEIGHT_VALUE = 1e30


def _json_integer(value):
    """A JSON integer, 2 and 2.0 alike, of any size; not true or "2", which pydantic would read as 1 and 2."""
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be an integer (true, false and strings are not)")
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_json_integer)]
Method = Literal[tuple(heads.METHODS)]
Feature = Annotated[StrictFloat, Field(ge=-MAX_FEATURE_VALUE, le=MAX_FEATURE_VALUE)]
Weight = Annotated[StrictFloat, Field(ge=-MAX_WEIGHT_VALUE, le=MAX_WEIGHT_VALUE)]
Label = Annotated[Integer, Field(ge=0, le=MAX_CLASSES - 1)]
Weights = tuple[
    Annotated[list[Annotated[list[Weight], Field(min_length=1, max_length=MAX_FEATURE_DIM)]],
              Field(min_length=2, max_length=MAX_CLASSES)],
    Annotated[list[Weight], Field(min_length=2, max_length=MAX_CLASSES)]]
# A learnt [W, b] spelled without prefixItems, which some OpenAPI 3.1 validators misread in responses.
LearntWeights = Annotated[tuple[list[list[float]], list[float]], WithJsonSchema({
    "type": "array", "minItems": 2, "maxItems": 2, "items": {"anyOf": [
        {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        {"type": "array", "items": {"type": "number"}}]},
    "description": "[W, b]: W num_classes rows of d numbers, then b of num_classes numbers."})]


# ----------------------------------------------------------------------------- configuration

def variable(name: str) -> str:
    return f"TRANSFER_SERVICE_{name.upper()}"


@declared
@dataclass(frozen=True)
class ServiceSettings:
    """What the service serves; each field can be set by ``TRANSFER_SERVICE_<FIELD>``."""

    # each setting's type and range, once: read from the environment and checked at start-up
    constraints: ClassVar[dict] = {
        "folder": Text(), "setup": Maybe(Text()), **se.INPUTS, "model": Maybe(Text(noun="a file path")),
        "method": Options(tuple(sorted(heads.METHODS))), "seed": Interval(int, 0), "max_body_bytes": Interval(int, 1),
        "max_evaluations": Interval(int, 1),
    }

    folder: str = "MNIST"
    setup: str | None = None  # default: the folder's main setup
    task: str = "binary"  # "binary": the first two target classes; "all": every target class
    dataset: str | None = None  # with classes: any class list of any dataset
    classes: tuple | None = None  # comma separated in the environment, e.g. "0,1"
    extractor: str = "study"  # "study" (the folder's source CNN) or another network of the registry
    cut: int | None = None  # study extractor: number of conv blocks kept (default all)
    model: str | None = None  # study: a source model file; other networks: their weights file
    input_size: int = 224  # networks other than the study CNN: side of the square input
    profile: str = "quick"  # which pretrained source model of the folder
    method: str = "slda"  # method used when a request names none
    pool: int | None = None  # at most this many training images to stream (default all)
    seed: int = 0  # seed of the heads built by update_weights
    max_body_bytes: int = 64 * 2 ** 20
    max_evaluations: int = 20000  # max_samples / evaluation_frequency allowed in one run_benchmark

    def __post_init__(self):
        """Every setting checked when the service starts, each refusal naming its variable."""
        check_fields(self, variable)
        if self.classes is not None and len(set(self.classes)) < 2:
            raise DataError(f"{variable('classes')}={','.join(map(str, self.classes))} needs at least two different "
                            f"classes, e.g. 0,1")
        try:
            get_setup(self.folder, self.setup)
        except DataError as err:
            raise DataError(f"{variable('folder')} / {variable('setup')}: {err}") from None

    @classmethod
    def from_env(cls, environ=os.environ) -> "ServiceSettings":
        values = {}
        for name, constraint in cls.constraints.items():
            text = environ.get(variable(name))
            if text is None or text == "":
                continue
            try:
                values[name] = constraint.parse(text)
            except ValueError as err:
                raise DataError(f"{variable(name)}={text!r} is not {err}") from None
        return cls(**values)


@dataclass(frozen=True)
class ServiceState:
    """Everything a request reads: never written after start-up."""

    settings: ServiceSettings
    extractor: Extractor
    features: se.TaskFeatures
    task: se.TargetTask


def load_state(settings: ServiceSettings, log=print) -> ServiceState:
    """The extractor and the target features (extracted once, then read from the cache)."""
    try:
        extractor = se.build_extractor(settings.extractor, settings.model, settings.folder, settings.setup,
                                       settings.profile, settings.cut, settings.input_size, train_if_missing=False,
                                       log=log)
    except DataError as err:
        raise DataError(f"{variable('model')} / {variable('cut')}: {err}") from None
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
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise PydanticCustomError("image_shape", "shape {shape}; expected H x W or H x W x C "
                                  "with C = 1, 3 or 4", {"shape": list(array.shape)})
    height, width = array.shape[:2]
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise PydanticCustomError("image_size", "size {height} x {width}; sides must be 1..{limit}",
                                  {"height": height, "width": width, "limit": MAX_IMAGE_SIDE})
    if not _leaf_types(value, array.ndim) <= {int, float}:
        raise PydanticCustomError("image_values", "pixel values must be numbers in 0..255, not true, false, "
                                  "null or strings")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise PydanticCustomError("image_values", "pixel values must be numbers in 0..255")
    return (array if array.ndim == 3 else array[:, :, None]).astype(np.float32)


def _leaf_types(value, depth: int) -> set:
    """The types of the values ``depth`` lists deep: numpy reads true as 1, "7" as 7 and null as NaN."""
    for _ in range(depth - 1):
        value = chain.from_iterable(value)
    return set(map(type, value))


def _image_schema(pixel: dict) -> dict:
    side = {"type": "array", "minItems": 1, "maxItems": MAX_IMAGE_SIDE}
    return {**side, "items": {**side, "items": pixel}}


PIXEL_SCHEMA = {"type": "number", "minimum": 0, "maximum": 255}
Image = Annotated[np.ndarray, PlainValidator(image_array), WithJsonSchema({
    "anyOf": [_image_schema(PIXEL_SCHEMA)] + [_image_schema({"type": "array", "minItems": c, "maxItems": c,
                                                             "items": PIXEL_SCHEMA}) for c in (1, 3, 4)],
    "description": "H x W (grey) or H x W x C (C = 1, 3, or 4 with alpha dropped) pixel values 0-255; "
                   "every row has the same length."})]


class ExtractRequest(Strict):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    images: list[Image] = Field(
        min_length=1,
        description="Images as nested lists, each H x W (grey) or H x W x C (C = 1, 3, or 4 with alpha "
                    "dropped), pixel values 0-255 as integers or floats; each image may have its own size.")


class ExtractResponse(BaseModel):
    features: list[list[float]] = Field(description="One feature vector per image, in request order.")


class UpdateRequest(Strict):
    features: list[Annotated[list[Feature], Field(min_length=1, max_length=MAX_FEATURE_DIM)]] = Field(
        min_length=1, description=f"n rows of d numbers, every row the same length d (1..{MAX_FEATURE_DIM}).")
    labels: list[Label] = Field(min_length=1, description="n labels, one per row of features, in "
                                "0..num_classes-1.")
    current_weights: Weights | None = Field(None, description="[W, b], W num_classes x d, b num_classes; "
                                            "null: start from the method's own initial head.")
    num_classes: Integer = Field(2, ge=2, le=MAX_CLASSES)
    method: Method | None = Field(None, description="Default: the service's configured method.")


class UpdateResponse(BaseModel):
    updated_weights: LearntWeights = Field(description="[W, b] after learning from the batch.")


def protocol_field(name: str, more: str = ""):
    """A request field of the benchmark protocol: its default, limits and description are the
    protocol's declaration (``benchmark.Protocol.constraints``)."""
    constraint = se.Protocol.constraints[name]
    return Field(defaults(se.Protocol)[name], **constraint.schema(),
                 description=f"{constraint.help[0].upper()}{constraint.help[1:]}{more}.")


class BenchmarkRequest(Strict):
    custom_weights: Weights | None = Field(None, description="Initial head [W, b] of the custom method "
                                           "(num_classes x d, num_classes of the service's task); null: the "
                                           "method's own.")
    batch_size: Integer = protocol_field("batch_size")
    max_samples: Integer = protocol_field("max_samples")
    evaluation_frequency: Integer = protocol_field("evaluation_frequency", "; max_samples / evaluation_frequency "
                                                   "evaluations at most the service's limit")
    method: Method | None = Field(None, description="Custom method; default: the service's configured one.")
    seed: Integer = Field(0, ge=0, description="Seeds the sample order and the heads' initialisation.")
    threshold: StrictFloat = protocol_field("threshold")
    window: Integer = protocol_field("window")

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


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """A body that is not UTF-8 is as unreadable as one that is not JSON: the same 422."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return await _validation_error(request, RequestValidationError([{
            "loc": ("body",), "type": "json_invalid",
            "msg": f"body is not UTF-8 text (byte {cause.start}: {cause.reason}); send JSON encoded as UTF-8"}]))
    return await http_exception_handler(request, exc)


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

**Limits**: the schema states every rule on a single field: numbers are JSON numbers (`true`,
`false`, `null` and strings are not), features lie within +-1e6, weights within +-1e30, and
`custom_weights` and `max_samples` fit the service's own task (its classes, feature size and
training pool).  The rules that tie values together are checked on top: every row of an image or
of `features` has the same length, `labels` has one label per row of `features`, each below
`num_classes`, `current_weights` is num_classes x d, and `max_samples / evaluation_frequency` is at
most the service's number of evaluations per request.

Bad input gets a 422 naming the field and what to change, as does a body that is not JSON or not
UTF-8; a body over the size limit gets a 413.
"""

ERRORS = {413: {"model": Message, "description": "Request body over the size limit."}}


def _with_task_limits(schema: dict, state: ServiceState) -> dict:
    """The benchmark's limits that depend on the task loaded: its training pool and its head's shape."""
    body = schema["components"]["schemas"]["BenchmarkRequest"]["properties"]
    body["max_samples"]["maximum"] = len(state.features.train_y)
    classes, dim = state.features.num_classes, state.features.dim
    rows, biases = next(s for s in body["custom_weights"]["anyOf"] if s.get("type") == "array")["prefixItems"]
    for part in (rows, biases):
        part.update(minItems=classes, maxItems=classes)
    rows["items"].update(minItems=dim, maxItems=dim)
    return schema


def create_app(settings: ServiceSettings | None = None, state: ServiceState | None = None) -> FastAPI:
    """The service for ``settings`` (default: from the environment); ``state`` skips loading."""
    settings = state.settings if state else settings or ServiceSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        se.single_threaded_numerics()  # lasting BLAS limit, so that per-request limits restore to it
        if getattr(app.state, "service", None) is None:
            app.state.service = load_state(settings)
        yield

    # Swagger UI and ReDoc from the package's own files, with the online validator off: /docs works offline
    app = FastAPIOffline(title="Transfer-learning sample-efficiency benchmark", version="1.0",
                         description=DESCRIPTION, lifespan=lifespan, swagger_ui_parameters={"validatorUrl": None})
    app.state.service = state
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def openapi() -> dict:
        """FastAPI's schema, with the benchmark's limits once the task is loaded."""
        schema = FastAPI.openapi(app)
        return schema if app.state.service is None else _with_task_limits(schema, app.state.service)

    app.openapi = openapi

    def current(request: Request) -> ServiceState:
        return request.app.state.service

    @app.get("/", response_model=ServiceInfo, summary="What this service is")
    def root(request: Request) -> ServiceInfo:
        s = current(request)
        return ServiceInfo(
            service="transfer-learning sample-efficiency benchmark",
            description="Counts how many streamed training samples a linear head on frozen features needs to "
                        "reach and keep the accuracy threshold, against the adam baseline. See /docs.",
            default_method=s.settings.method, methods=sorted(heads.METHODS), baseline=heads.REFERENCE_METHOD,
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


def __getattr__(name: str):
    """``app`` (``uvicorn functions.efficiency.service:app``), built when uvicorn first asks for it:
    the settings are checked and the extractor and features loaded before the server starts, so a
    bad setting stops it with one line instead of a start-up traceback."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        built = create_app(state=load_state(ServiceSettings.from_env()))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = built
    return built
