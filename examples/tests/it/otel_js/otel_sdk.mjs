// The OpenTelemetry JavaScript SDK exporting to `wit serve` over OTLP/HTTP JSON (its
// `exporter-*-otlp-http` packages send JSON): spans, log records and metrics. Prints, as
// JSON, what it sent, for the test to find in SQL (the same shape as ../otel_sdk.py).
//
// Usage: node otel_sdk.mjs ENDPOINT SERVICE_NAME
import { context, trace, ValueType } from "@opentelemetry/api";
import { SeverityNumber } from "@opentelemetry/api-logs";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { LoggerProvider, SimpleLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-http";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";

const [endpoint, service] = process.argv.slice(2);
const resource = resourceFromAttributes({ "service.name": service, "deployment.environment": "test" });
const out = { spans: [], logs: [], metrics: [] };
// Nanosecond times exceed a double's integer range: kept as BigInt, printed as JSON integers.
const ns = ([s, n]) => BigInt(s) * 1000000000n + BigInt(n);

const tracerProvider = new BasicTracerProvider({
  resource,
  spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }))],
});
const tracer = tracerProvider.getTracer("wit.test", "1.2.3");
const parent = tracer.startSpan("checkout", { attributes: { "http.method": "POST", items: 3, ratio: 0.5, paid: true } });
const child = tracer.startSpan("charge-card", {}, trace.setSpan(context.active(), parent));
child.setAttribute("card.brand", "visa");
child.addEvent("retry", { attempt: 2 });
child.end();
parent.end();
for (const s of [child, parent]) {
  const ctx = s.spanContext();
  out.spans.push({ name: s.name, trace_id: ctx.traceId, span_id: ctx.spanId, start: ns(s.startTime), end: ns(s.endTime), attributes: { ...s.attributes } });
}
await tracerProvider.forceFlush();
await tracerProvider.shutdown();

const loggerProvider = new LoggerProvider({
  resource,
  processors: [new SimpleLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${endpoint}/v1/logs` }) })],
});
const logger = loggerProvider.getLogger("wit.test.logs");
const records = [[SeverityNumber.INFO, "INFO", "order placed"], [SeverityNumber.ERROR, "ERROR", "card declined"]];
for (const [i, [severityNumber, severityText, body]] of records.entries()) {
  const now = Date.now();
  const time = ns([Math.floor(now / 1000), (now % 1000) * 1000000 + i]);
  const hr = [Number(time / 1000000000n), Number(time % 1000000000n)];
  logger.emit({ timestamp: hr, observedTimestamp: hr, severityNumber, severityText, body, attributes: { order: i } });
  out.logs.push({ body, severity_number: severityNumber, severity_text: severityText, time, order: i });
}
await loggerProvider.forceFlush();
await loggerProvider.shutdown();

const meterProvider = new MeterProvider({
  resource,
  readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }), exportIntervalMillis: 3600000 })],
});
const meter = meterProvider.getMeter("wit.test.metrics");
const counter = meter.createCounter("orders", { unit: "1", valueType: ValueType.INT });
counter.add(5, { region: "eu" });
counter.add(2, { region: "us" });
const histogram = meter.createHistogram("latency", { unit: "ms" });
for (const v of [1.0, 4.0, 10.0]) histogram.record(v, { route: "/cart" });
await meterProvider.forceFlush();
await meterProvider.shutdown();
out.metrics = [{ name: "orders", region: "eu", value: 5 }, { name: "orders", region: "us", value: 2 }, { name: "latency", route: "/cart", count: 3, sum: 15.0 }];

console.log(JSON.stringify(out, (_, v) => (typeof v === "bigint" ? `__int__${v}` : v)).replace(/"__int__(\d+)"/g, "$1"));
