"""A stateful, wire-compatible Weaviate stand-in for tests: the real ``weaviate-client`` talks
to it over REST and gRPC (the client's own generated stubs).

It implements what troupe's ``WeaviateMemory`` needs, faithfully enough to catch wrong calls:
REST ``/v1/meta``, ``/v1/.well-known/ready``, ``/v1/schema`` (classes, tenants) and
``/v1/objects`` (single insert); gRPC ``weaviate.v1.Weaviate`` ``Search`` (filters, BM25,
near-vector, hybrid with relative-score fusion, sort), ``BatchObjects``, ``BatchDelete``,
``Aggregate`` (object count) and ``TenantsGet``, plus the gRPC health check. Anything else,
REST or gRPC, fails loudly: HTTP 501 / gRPC UNIMPLEMENTED, and it is recorded in
``unexpected`` so a test can assert nothing unplanned was called.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid as uuid_lib
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    batch_delete_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

VERSION = "1.32.0"
_TOKEN = re.compile(r"\w+")
_Op = base_pb2.Filters.Operator


class Unsupported(Exception):
    """A request the stand-in does not implement."""


@dataclass
class _Object:
    properties: dict[str, Any]
    vector: np.ndarray | None


@dataclass
class _State:
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, set[str]] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[str, _Object]] = field(default_factory=dict)


class WeaviateStandIn:
    """Runs the REST and gRPC servers on 127.0.0.1 (free ports) until ``stop``.

    Args:
        api_key: When set, every call must carry ``Authorization: Bearer <api_key>``.
    """

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.state = _State()
        self.lock = threading.Lock()
        self.unexpected: list[str] = []
        self.calls: Counter[str] = Counter()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self))
        self.http_port = int(self._http.server_address[1])
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Servicer(self), self._grpc)
        self._grpc.add_generic_rpc_handlers([_health_handler(self)])
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The REST URL to give the client."""
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        """Stops both servers."""
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)

    def authorised(self, header: str | None) -> bool:
        return self.api_key is None or header == f"Bearer {self.api_key}"

    def fail(self, what: str) -> str:
        self.unexpected.append(what)
        return f"weaviate stand-in does not implement {what}"

    def tenant_objects(self, collection: str, tenant: str) -> dict[str, _Object]:
        """The objects of one tenant; raises ``KeyError`` with Weaviate's wording if absent."""
        if collection not in self.state.classes:
            raise KeyError(f"class {collection!r} not found")
        if tenant not in self.state.tenants.get(collection, set()):
            raise KeyError(f"tenant not found: {tenant!r}")
        return self.state.objects.setdefault((collection, tenant), {})


# --- REST ---------------------------------------------------------------------------------


def _rest_handler(standin: WeaviateStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0].rstrip("/")
            standin.calls[f"{method} {path}"] += 1
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
                return self._send(200, {})
            if path == "/v1/.well-known/openid-configuration":
                return self._send(404, None)  # as a server without OIDC answers
            if not standin.authorised(self.headers.get("Authorization")):
                return self._send(401, {"code": 401, "message": "anonymous access not enabled"})
            with standin.lock:
                status, payload = _rest(standin, method, path, body)
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _rest(standin: WeaviateStandIn, method: str, path: str, body: Any) -> tuple[int, Any]:
    state = standin.state
    parts = path.split("/")[2:]  # after "/v1"
    if (method, parts) == ("GET", ["meta"]):
        return 200, {"version": VERSION, "hostname": "http://[::]:8080", "modules": {}}
    if parts[:1] == ["schema"]:
        if (method, len(parts)) == ("GET", 1):
            return 200, {"classes": list(state.classes.values())}
        if (method, len(parts)) == ("POST", 1):
            name = body["class"]
            if name in state.classes:
                return 422, {"error": [{"message": f"class name {name!r} already exists"}]}
            state.classes[name] = body
            state.tenants[name] = set()
            return 200, body
        name = parts[1]
        if name not in state.classes:
            return 404, None
        if (method, len(parts)) == ("GET", 2):
            return 200, state.classes[name]
        if (method, len(parts)) == ("DELETE", 2):
            del state.classes[name]
            state.tenants.pop(name, None)
            for key in [k for k in state.objects if k[0] == name]:
                del state.objects[key]
            return 200, None
        if parts[2:] == ["tenants"] and method == "POST":
            state.tenants[name].update(t["name"] for t in body)
            return 200, body
        if parts[2:] == ["tenants"] and method == "GET":
            return 200, [{"name": t, "activityStatus": "HOT"} for t in sorted(state.tenants[name])]
    if (method, parts) == ("POST", ["objects"]):
        try:
            objects = standin.tenant_objects(body["class"], body.get("tenant", ""))
        except KeyError as exc:
            return 422, {"error": [{"message": str(exc)}]}
        object_id = body.get("id") or str(uuid_lib.uuid4())
        vector = body.get("vector")
        objects[object_id] = _Object(
            dict(body.get("properties", {})),
            None if vector is None else np.asarray(vector, dtype=np.float32),
        )
        return 200, {**body, "id": object_id}
    return 501, {"error": [{"message": standin.fail(f"REST {method} {path}")}]}


# --- gRPC ---------------------------------------------------------------------------------


def _health_handler(standin: WeaviateStandIn) -> grpc.GenericRpcHandler:
    def check(request: Any, context: grpc.ServicerContext) -> Any:
        standin.calls["gRPC Health/Check"] += 1
        return health_weaviate_pb2.WeaviateHealthCheckResponse(
            status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
        )

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
            )
        },
    )


def _guarded(name: str):  # type: ignore[no-untyped-def]
    """Wraps a servicer method: auth, the lock, and loud failures for what is not handled."""

    def wrap(method):  # type: ignore[no-untyped-def]
        def call(self: _Servicer, request: Any, context: grpc.ServicerContext) -> Any:
            standin = self.standin
            standin.calls[f"gRPC {name}"] += 1
            auth = dict(context.invocation_metadata()).get("authorization")
            if not standin.authorised(auth):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing api key")
            try:
                with standin.lock:
                    return method(self, request)
            except Unsupported as exc:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, standin.fail(f"{name}: {exc}"))
            except KeyError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        return call

    return wrap


class _Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, standin: WeaviateStandIn) -> None:
        self.standin = standin

    @_guarded("TenantsGet")
    def TenantsGet(self, request: Any) -> Any:
        state = self.standin.state
        if request.collection not in state.classes:
            raise KeyError(f"class {request.collection!r} not found")
        names = state.tenants[request.collection]
        if request.HasField("names"):
            names = names & set(request.names.values)
        hot = tenants_pb2.TenantActivityStatus.TENANT_ACTIVITY_STATUS_HOT
        return tenants_pb2.TenantsGetReply(
            tenants=[tenants_pb2.Tenant(name=n, activity_status=hot) for n in sorted(names)]
        )

    @_guarded("BatchObjects")
    def BatchObjects(self, request: Any) -> Any:
        errors = []
        for index, item in enumerate(request.objects):
            try:
                objects = self.standin.tenant_objects(item.collection, item.tenant)
                vector = _batch_vector(item)
                _check_dimension(objects, vector)
                objects[item.uuid] = _Object(_batch_properties(item.properties), vector)
            except (KeyError, ValueError) as exc:
                errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=str(exc)))
        return batch_pb2.BatchObjectsReply(took=0.001, errors=errors)

    @_guarded("BatchDelete")
    def BatchDelete(self, request: Any) -> Any:
        objects = self.standin.tenant_objects(request.collection, request.tenant)
        matches = [i for i, o in objects.items() if _matches(request.filters, i, o)]
        if not request.dry_run:
            for object_id in matches:
                del objects[object_id]
        return batch_delete_pb2.BatchDeleteReply(
            took=0.001, failed=0, matches=len(matches), successful=len(matches)
        )

    @_guarded("Aggregate")
    def Aggregate(self, request: Any) -> Any:
        if len(request.aggregations) or request.HasField("group_by"):
            raise Unsupported("aggregations other than the object count")
        if request.WhichOneof("search") is not None:
            raise Unsupported(f"aggregate with {request.WhichOneof('search')}")
        objects = self.standin.tenant_objects(request.collection, request.tenant)
        count = sum(
            1
            for i, o in objects.items()
            if not request.HasField("filters") or _matches(request.filters, i, o)
        )
        return aggregate_pb2.AggregateReply(
            took=0.001, single_result=aggregate_pb2.AggregateReply.Single(objects_count=count)
        )

    @_guarded("Search")
    def Search(self, request: Any) -> Any:
        for unsupported in ("group_by", "near_object", "near_text", "generative", "rerank"):
            if request.HasField(unsupported):
                raise Unsupported(f"Search with {unsupported}")
        objects = self.standin.tenant_objects(request.collection, request.tenant)
        pool = [
            (i, o)
            for i, o in objects.items()
            if not request.HasField("filters") or _matches(request.filters, i, o)
        ]
        limit = request.limit or 10
        scored: list[tuple[str, _Object, float | None, float | None]]
        if request.HasField("hybrid_search"):
            scored = _hybrid(request.hybrid_search, pool, objects)
        elif request.HasField("near_vector"):
            query = _query_vector(request.near_vector)
            distances = [(i, o, None, 1.0 - _cosine(query, o.vector)) for i, o in pool]
            scored = sorted(
                [d for d in distances if d[1].vector is not None], key=lambda d: (d[3], d[0])
            )
        elif request.HasField("bm25_search"):
            scores = _bm25(request.bm25_search.query, request.bm25_search.properties, pool, objects)
            scored = sorted(
                [(i, o, scores[i], None) for i, o in pool if scores[i] > 0],
                key=lambda s: (-(s[2] or 0.0), s[0]),
            )
        else:
            scored = [(i, o, None, None) for i, o in sorted(pool, key=lambda p: p[0])]
            for sort in reversed(request.sort_by):
                scored.sort(
                    key=lambda s, path=sort.path[0]: s[1].properties.get(path),
                    reverse=not sort.ascending,
                )
        page = scored[request.offset : request.offset + limit]
        return search_get_pb2.SearchReply(
            took=0.001, results=[_result(request, *item) for item in page]
        )


# --- helpers ------------------------------------------------------------------------------


def _batch_vector(item: Any) -> np.ndarray | None:
    if item.vector_bytes:
        return np.frombuffer(item.vector_bytes, dtype="<f4").copy()
    if len(item.vector):
        return np.asarray(item.vector, dtype=np.float32)
    for named in item.vectors:
        if named.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
            raise Unsupported("multi-vectors")
        return np.frombuffer(named.vector_bytes, dtype="<f4").copy()
    return None


def _query_vector(message: Any) -> np.ndarray:
    if message.vector_bytes:
        return np.frombuffer(message.vector_bytes, dtype="<f4").copy()
    if len(message.vector):
        return np.asarray(message.vector, dtype=np.float32)
    if len(message.vectors) == 1:
        return np.frombuffer(message.vectors[0].vector_bytes, dtype="<f4").copy()
    raise Unsupported("a query vector in a form other than one single vector")


def _check_dimension(objects: dict[str, _Object], vector: np.ndarray | None) -> None:
    if vector is None:
        return
    for other in objects.values():
        if other.vector is not None and len(other.vector) != len(vector):
            raise ValueError(
                f"new node has a vector with length {len(vector)}. "
                f"Existing nodes have vectors with length {len(other.vector)}"
            )
        return


def _batch_properties(properties: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(properties.non_ref_properties)
    for text_array in properties.text_array_properties:
        result[text_array.prop_name] = list(text_array.values)
    for number_array in properties.number_array_properties:
        values = (
            np.frombuffer(number_array.values_bytes, dtype="<f8").tolist()
            if number_array.values_bytes
            else list(number_array.values)
        )
        result[number_array.prop_name] = values
    for name in properties.empty_list_props:
        result[name] = []
    if len(properties.single_target_ref_props) or len(properties.object_properties):
        raise Unsupported("references and object properties")
    return result


def _filter_value(filters: Any) -> Any:
    kind = filters.WhichOneof("test_value")
    if kind in ("value_text", "value_int", "value_number", "value_boolean"):
        return getattr(filters, kind)
    if kind in ("value_text_array", "value_int_array", "value_number_array"):
        return list(getattr(filters, kind).values)
    raise Unsupported(f"filter value {kind}")


def _matches(filters: Any, object_id: str, obj: _Object) -> bool:
    op = filters.operator
    if op == _Op.OPERATOR_AND:
        return all(_matches(f, object_id, obj) for f in filters.filters)
    if op == _Op.OPERATOR_OR:
        return any(_matches(f, object_id, obj) for f in filters.filters)
    if op == _Op.OPERATOR_NOT:
        return not _matches(filters.filters[0], object_id, obj)
    if filters.HasField("target"):
        if filters.target.WhichOneof("target") != "property":
            raise Unsupported("reference filters")
        prop = filters.target.property
    else:
        prop = filters.on[0]
    actual = object_id if prop == "_id" else obj.properties.get(prop)
    expected = _filter_value(filters)
    if actual is None:
        return False
    if op == _Op.OPERATOR_EQUAL:
        return bool(actual == expected)
    if op == _Op.OPERATOR_NOT_EQUAL:
        return bool(actual != expected)
    if op == _Op.OPERATOR_GREATER_THAN:
        return bool(actual > expected)
    if op == _Op.OPERATOR_GREATER_THAN_EQUAL:
        return bool(actual >= expected)
    if op == _Op.OPERATOR_LESS_THAN:
        return bool(actual < expected)
    if op == _Op.OPERATOR_LESS_THAN_EQUAL:
        return bool(actual <= expected)
    values = actual if isinstance(actual, list) else [actual]
    if op == _Op.OPERATOR_CONTAINS_ANY:
        return any(v in values for v in expected)
    if op == _Op.OPERATOR_CONTAINS_ALL:
        return all(v in values for v in expected)
    raise Unsupported(f"filter operator {_Op.Name(op)}")


def _cosine(query: np.ndarray, vector: np.ndarray | None) -> float:
    if vector is None:
        return 0.0
    if len(vector) != len(query):
        raise ValueError(f"vector lengths don't match: {len(query)} vs {len(vector)}")
    denominator = float(np.linalg.norm(query) * np.linalg.norm(vector)) or 1.0
    return float(query @ vector) / denominator


def _bm25(
    query: str,
    properties: Any,
    pool: list[tuple[str, _Object]],
    corpus: dict[str, _Object],
    k1: float = 1.2,
    b: float = 0.75,
) -> dict[str, float]:
    """Okapi BM25 of ``query`` over the given text properties (corpus statistics: all objects)."""
    if not properties:
        raise Unsupported("BM25 over all properties (name query_properties)")

    def tokens(obj: _Object) -> list[str]:
        return [
            t for p in properties for t in _TOKEN.findall(str(obj.properties.get(p, "")).lower())
        ]

    docs = {i: tokens(o) for i, o in corpus.items()}
    n = len(docs) or 1
    average = sum(len(t) for t in docs.values()) / n or 1.0
    terms = set(_TOKEN.findall(query.lower()))
    df = {t: sum(1 for d in docs.values() if t in d) for t in terms}
    scores = {}
    for object_id, _ in pool:
        counts = Counter(docs[object_id])
        length = len(docs[object_id])
        total = 0.0
        for term in terms:
            tf = counts[term]
            if tf:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        scores[object_id] = total
    return scores


def _minmax(values: dict[str, float]) -> dict[str, float]:
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    if high == low:
        return dict.fromkeys(values, 1.0 if high > 0 else 0.0)
    return {k: (v - low) / (high - low) for k, v in values.items()}


def _hybrid(
    hybrid: Any, pool: list[tuple[str, _Object]], corpus: dict[str, _Object]
) -> list[tuple[str, _Object, float | None, float | None]]:
    """Relative score fusion: min-max normalise each search's scores, then alpha-weight them."""
    if hybrid.fusion_type != hybrid.FusionType.FUSION_TYPE_RELATIVE_SCORE:
        raise Unsupported(f"fusion {hybrid.FusionType.Name(hybrid.fusion_type)}")
    alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
    if hybrid.HasField("near_vector"):
        query = _query_vector(hybrid.near_vector)
    else:
        query = _query_vector(hybrid)
    keyword = {
        i: s for i, s in _bm25(hybrid.query, hybrid.properties, pool, corpus).items() if s > 0
    }
    vector = {i: _cosine(query, o.vector) for i, o in pool if o.vector is not None}
    keyword_norm, vector_norm = _minmax(keyword), _minmax(vector)
    fused = {
        i: alpha * vector_norm.get(i, 0.0) + (1 - alpha) * keyword_norm.get(i, 0.0)
        for i in set(keyword) | set(vector)
    }
    objects = dict(pool)
    ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(i, objects[i], score, None) for i, score in ranked]


def _value(value: Any) -> properties_pb2.Value:
    if isinstance(value, bool):
        return properties_pb2.Value(bool_value=value)
    if isinstance(value, str):
        return properties_pb2.Value(text_value=value)
    if isinstance(value, int | float):
        return properties_pb2.Value(number_value=float(value))
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            texts = properties_pb2.TextValues(values=value)
            return properties_pb2.Value(list_value=properties_pb2.ListValue(text_values=texts))
        numbers = properties_pb2.NumberValues(values=np.asarray(value, dtype="<f8").tobytes())
        return properties_pb2.Value(list_value=properties_pb2.ListValue(number_values=numbers))
    raise Unsupported(f"property value of type {type(value).__name__}")


def _result(
    request: Any, object_id: str, obj: _Object, score: float | None, distance: float | None
) -> Any:
    wanted = request.properties
    if not request.HasField("properties") or wanted.return_all_nonref_properties:
        names = list(obj.properties)
    else:
        names = [n for n in wanted.non_ref_properties if n in obj.properties]
    props = properties_pb2.Properties(fields={n: _value(obj.properties[n]) for n in names})
    meta = search_get_pb2.MetadataResult(id=object_id, id_as_bytes=uuid_lib.UUID(object_id).bytes)
    if request.metadata.score and score is not None:
        meta.score, meta.score_present = score, True
    if request.metadata.distance and distance is not None:
        meta.distance, meta.distance_present = distance, True
        meta.certainty, meta.certainty_present = 1 - distance / 2, True
    if request.metadata.vector and obj.vector is not None:
        meta.vector_bytes = obj.vector.astype("<f4").tobytes()
    return search_get_pb2.SearchResult(
        properties=search_get_pb2.PropertiesResult(non_ref_props=props), metadata=meta
    )
