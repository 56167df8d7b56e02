"""The OpenTelemetry Python SDK exporting to `wit serve`: spans, log records and metrics over
OTLP/HTTP protobuf or OTLP/gRPC (the SDK's HTTP exporters speak protobuf only). Prints, as
JSON, what it sent, for the test to find in SQL.

Usage: python3 otel_sdk.py http|grpc ENDPOINT SERVICE_NAME
"""
import json, sys, time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry._logs import LogRecord, SeverityNumber

transport, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    kw = dict(endpoint=endpoint, insecure=True)
    spans, logs, metrics = OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter(**kw)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    spans = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    logs = OTLPLogExporter(endpoint=endpoint + "/v1/logs")
    metrics = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")

resource = Resource.create({"service.name": service, "deployment.environment": "test"})
out = {"spans": [], "logs": [], "metrics": []}

tp = TracerProvider(resource=resource)
tp.add_span_processor(SimpleSpanProcessor(spans))
tracer = tp.get_tracer("wit.test", "1.2.3")
with tracer.start_as_current_span("checkout", attributes={"http.method": "POST", "items": 3, "ratio": 0.5, "paid": True}) as parent:
    with tracer.start_as_current_span("charge-card") as child:
        child.set_attribute("card.brand", "visa")
        child.add_event("retry", {"attempt": 2})
for s in [child, parent]:
    ctx = s.get_span_context()
    out["spans"].append({"name": s.name, "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
                         "start": s.start_time, "end": s.end_time, "attributes": dict(s.attributes)})
tp.force_flush(); tp.shutdown()

lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
logger = lp.get_logger("wit.test.logs")
for i, (sev, text) in enumerate([(SeverityNumber.INFO, "order placed"), (SeverityNumber.ERROR, "card declined")]):
    ts = time.time_ns()
    logger.emit(LogRecord(timestamp=ts, observed_timestamp=ts, severity_number=sev, severity_text=sev.name,
                          body=text, attributes={"order": i}))
    out["logs"].append({"body": text, "severity_number": sev.value, "severity_text": sev.name, "time": ts, "order": i})
lp.force_flush(); lp.shutdown()

reader = PeriodicExportingMetricReader(metrics, export_interval_millis=3_600_000)
mp = MeterProvider(resource=resource, metric_readers=[reader])
meter = mp.get_meter("wit.test.metrics")
counter = meter.create_counter("orders", unit="1")
counter.add(5, {"region": "eu"})
counter.add(2, {"region": "us"})
hist = meter.create_histogram("latency", unit="ms")
for v in [1.0, 4.0, 10.0]:
    hist.record(v, {"route": "/cart"})
mp.force_flush(); mp.shutdown()
out["metrics"] = [{"name": "orders", "region": "eu", "value": 5}, {"name": "orders", "region": "us", "value": 2},
                  {"name": "latency", "route": "/cart", "count": 3, "sum": 15.0}]
print(json.dumps(out))
