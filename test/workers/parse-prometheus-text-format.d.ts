// Types of the npm package parse-prometheus-text-format (it ships none): what its default export,
// a parser of the Prometheus text exposition format, returns.
declare module "parse-prometheus-text-format" {
  export interface PrometheusSample {
    value: string;
    labels?: Record<string, string>;
    timestamp_ms?: string;
  }
  export interface PrometheusFamily {
    name: string;
    help: string;
    type: "COUNTER" | "GAUGE" | "SUMMARY" | "HISTOGRAM" | "UNTYPED";
    metrics: PrometheusSample[];
  }
  export default function parsePrometheusTextFormat(text: string): PrometheusFamily[];
}
