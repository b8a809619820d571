// The Grafana dashboards of a demod run, written once here and generated into
// deploy/grafana/dashboards/*.json. After a change, regenerate them with
//   node tools/dashboards-check/check.mjs --write
// (scripts/tools.sh installs the checker; ctest's grafana_dashboards fails while the committed
// JSON differs from what this file generates).
//
// Every panel's query reads the coordinator's metrics (server/coordinator_metrics.cc). A run is
// one coordinator, so the run's series are those of the scrape target that exports
// demod_run_info{run_id="$run"}: the hidden variable $instance holds that target (more than one
// when the coordinator was rescheduled within the time range), and every selector filters on
// it. Variables appear only in =~ matchers, where a multi-value or "All" selection works.
import {
  type Dashboard,
  type DataSourceRef,
  type FieldConfigSource,
  type Panel,
  type RowPanel,
  type Threshold,
  type ValueMapping,
  type VariableModel,
  BarGaugeDisplayMode,
  BarGaugeNamePlacement,
  BarGaugeSizing,
  BarGaugeValueMode,
  BigValueColorMode,
  BigValueGraphMode,
  BigValueJustifyMode,
  BigValueTextMode,
  DashboardCursorSync,
  MappingType,
  PercentChangeColorMode,
  SortOrder,
  StackingMode,
  ThresholdsMode,
  TooltipDisplayMode,
  VariableHide,
  VariableRefresh,
  VariableSort,
  VisibilityMode,
  VizOrientation,
} from "@grafana/schema";
import type { Options as BarGaugeOptions } from "@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen";
import type { Options as StatOptions } from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type { Options as TableOptions } from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type { FieldConfig as TimeSeriesFieldConfig, Options as TimeSeriesOptions } from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

// ---- Queries -------------------------------------------------------------------------------

const datasource: DataSourceRef = { type: "prometheus", uid: "${datasource}" };

// Matchers: the run's coordinator, and the workers chosen in $worker.
const RUN = 'instance=~"$instance"';
const WORKERS = `${RUN}, worker=~"$worker"`;

/** `metric{matchers}`: one of the run's series. */
function m(metric: string, matchers = RUN): string {
  return `${metric}{${matchers}}`;
}

/** The per-second rate of a counter of the run. */
function rate(metric: string, matchers = RUN): string {
  return `rate(${m(metric, matchers)}[$__rate_interval])`;
}

/** A quantile of one of the coordinator's histograms. */
function quantile(q: number, histogram: string): string {
  return `histogram_quantile(${q}, sum by (le) (${rate(`${histogram}_bucket`)}))`;
}

// Each worker's tokens/s with the device it joined with as labels (demod_worker_info is 1). On
// instance too: a worker's name is unique within a run's coordinator only.
const TOKENS_PER_SECOND_BY_DEVICE =
  `${m("demod_tokens_per_second", WORKERS)}` +
  ` * on(instance, worker) group_left(device_kind, device_name) ${m("demod_worker_info")}`;

interface Query {
  expr: string;
  /** The series' name in legends and tooltips (Grafana's {{label}} syntax). */
  legend?: string;
  /** Only the latest value (bar gauges, tables), not a range. */
  instant?: boolean;
  /** One row per series, its labels as columns (tables). */
  table?: boolean;
}

// ---- Panels --------------------------------------------------------------------------------

/** What every data panel states: a unit, and what it shows and what a bad value means. */
interface Common {
  title: string;
  description: string;
  unit: string;
  queries: Query[];
  /** Width in Grafana's 24 columns, and height in rows of 30 px. */
  w: number;
  h?: number;
  min?: number;
  max?: number;
  decimals?: number;
  /** Colors from a value up: [[value, color], ...] after "green" below the first. */
  thresholds?: Array<[number, string]>;
  mappings?: ValueMapping[];
}

/** A panel before the dashboard gives it an id and a place. */
type Cell = Omit<Panel, "id" | "gridPos"> & { w: number; h: number };
/** A row header: starts a new line. */
type Row = { row: string };

function fieldConfig(c: Common, custom: Record<string, unknown> = {}): FieldConfigSource {
  const steps: Threshold[] = [{ value: null, color: "green" }];
  for (const [value, color] of c.thresholds ?? []) steps.push({ value, color });
  return {
    defaults: {
      unit: c.unit,
      min: c.min,
      max: c.max,
      decimals: c.decimals,
      mappings: c.mappings ?? [],
      thresholds: { mode: ThresholdsMode.Absolute, steps },
      custom,
    },
    overrides: [],
  };
}

function cell(type: string, c: Common, options: Record<string, unknown>,
              custom: Record<string, unknown> = {}): Cell {
  return {
    type,
    title: c.title,
    description: c.description,
    datasource,
    w: c.w,
    h: c.h ?? 8,
    fieldConfig: fieldConfig(c, custom),
    options,
    targets: c.queries.map((q, i) => ({
      refId: String.fromCharCode(65 + i),
      datasource,
      editorMode: "code",
      expr: q.expr,
      legendFormat: q.legend ?? "__auto",
      range: !q.instant,
      instant: q.instant ?? false,
      format: q.table ? "table" : "time_series",
    })),
  };
}

function timeseries(c: Common & { stack?: boolean }): Cell {
  const options: TimeSeriesOptions = {
    legend: { showLegend: true, placement: "bottom", calcs: [] },
    tooltip: { mode: TooltipDisplayMode.Multi, sort: SortOrder.Descending },
  };
  const custom: TimeSeriesFieldConfig = {
    lineWidth: 1,
    fillOpacity: c.stack ? 30 : 10,
    showPoints: VisibilityMode.Never,
    spanNulls: false,
    stacking: { mode: c.stack ? StackingMode.Normal : StackingMode.None, group: "A" },
  };
  return cell("timeseries", c, { ...options }, { ...custom });
}

/** The latest value in large type, over a sparkline of the time range. */
function stat(c: Common & { names?: boolean }): Cell {
  const options: StatOptions = {
    orientation: VizOrientation.Auto,
    reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
    colorMode: c.thresholds || c.mappings ? BigValueColorMode.Value : BigValueColorMode.None,
    graphMode: BigValueGraphMode.Area,
    justifyMode: BigValueJustifyMode.Auto,
    textMode: c.names ? BigValueTextMode.ValueAndName : BigValueTextMode.Value,
    percentChangeColorMode: PercentChangeColorMode.Standard,
    showPercentChange: false,
    wideLayout: true,
  };
  return cell("stat", { h: 4, ...c }, { ...options });
}

/** One horizontal bar per series, at its latest value. */
function barGauge(c: Common): Cell {
  const options: BarGaugeOptions = {
    orientation: VizOrientation.Horizontal,
    reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
    legend: { showLegend: false, placement: "bottom", calcs: [] },
    displayMode: BarGaugeDisplayMode.Gradient,
    valueMode: BarGaugeValueMode.Color,
    namePlacement: BarGaugeNamePlacement.Auto,
    showUnfilled: true,
    sizing: BarGaugeSizing.Auto,
    minVizHeight: 16,
    maxVizHeight: 300,
    minVizWidth: 8,
  };
  return cell("bargauge", c, { ...options });
}

/** One row per series of an instant query, its labels as columns; `hide` drops columns. */
function table(c: Common & { hide: string[] }): Cell {
  const options: TableOptions = { frameIndex: 0, showHeader: true };
  const excludeByName = Object.fromEntries(c.hide.map((name) => [name, true]));
  return {
    ...cell("table", c, { ...options }),
    transformations: [{ id: "organize", options: { excludeByName } }],
  };
}

// ---- Dashboards ----------------------------------------------------------------------------

function variables(): VariableModel[] {
  const query = (name: string, label: string, q: string): VariableModel => ({
    type: "query",
    name,
    label,
    datasource,
    query: q,
    refresh: VariableRefresh.onTimeRangeChanged,
    sort: VariableSort.alphabeticalAsc,
  });
  const all = { text: ["All"], value: ["$__all"] };
  return [
    { type: "datasource", name: "datasource", label: "Data source", query: "prometheus" },
    query("run", "Run", "label_values(demod_run_info, run_id)"),
    {
      // The run's coordinator as a scrape target; every query filters on it.
      ...query("instance", "Coordinator", 'label_values(demod_run_info{run_id=~"$run"}, instance)'),
      hide: VariableHide.hideVariable,
      multi: true,
      includeAll: true,
      current: all,
    },
    {
      ...query("worker", "Worker", `label_values(${m("demod_worker_info")}, worker)`),
      multi: true,
      includeAll: true,
      // A regex rather than the list of names: workers that join later show up at once.
      allValue: ".*",
      current: all,
    },
  ];
}

/** A dashboard: ids in order from 1, panels laid out left to right in Grafana's 24 columns. */
function dashboard(uid: string, title: string, description: string,
                   items: Array<Cell | Row>): Dashboard {
  const panels: Array<Panel | RowPanel> = [];
  let x = 0;
  let y = 0;
  let lineHeight = 0;
  const newLine = () => {
    y += lineHeight;
    x = 0;
    lineHeight = 0;
  };
  for (const item of items) {
    const id = panels.length + 1;
    if ("row" in item) {
      newLine();
      panels.push({ type: "row", id, title: item.row, collapsed: false, panels: [],
                    gridPos: { x: 0, y, w: 24, h: 1 } });
      // The row's panels start below its header.
      lineHeight = 1;
      newLine();
      continue;
    }
    const { w, h, ...panel } = item;
    if (x + w > 24) newLine();
    panels.push({ ...panel, id, gridPos: { x, y, w, h } });
    x += w;
    lineHeight = Math.max(lineHeight, h);
  }
  return {
    uid,
    title,
    description,
    tags: ["demod"],
    editable: true,
    graphTooltip: DashboardCursorSync.Crosshair,
    refresh: "10s",
    time: { from: "now-1h", to: "now" },
    timezone: "browser",
    // Grafana migrates older schema versions forward when it loads a dashboard, so 39 loads on
    // Grafana 10.4 and every later release.
    schemaVersion: 39,
    links: [{
      type: "dashboards", title: "demod", tags: ["demod"], asDropdown: true, includeVars: true,
      keepTime: true, targetBlank: false, icon: "external link", tooltip: "", url: "",
    }],
    templating: { list: variables() },
    panels,
  };
}

const paused: ValueMapping[] = [{
  type: MappingType.ValueToText,
  options: { "0": { text: "training", color: "green" }, "1": { text: "paused", color: "red" } },
}];

const runOverview = dashboard("demod-run-overview", "demod / Run overview",
  "Where the run is: steps, time to finish, losses, learning rate and who is training.", [
    stat({
      title: "Step", unit: "none", w: 4, decimals: 0,
      description: "The last completed training step. Bad: it stops rising while workers are " +
        "connected (the run is paused, or steps no longer close).",
      queries: [{ expr: m("demod_current_step"), legend: "step" }],
    }),
    stat({
      title: "Progress", unit: "percentunit", w: 4, min: 0, max: 1,
      description: "The last completed step as a share of the run's total steps.",
      queries: [{ expr: `${m("demod_current_step")} / ${m("demod_total_steps")}`,
                  legend: "progress" }],
    }),
    stat({
      title: "Steps per minute", unit: "count:steps/min", w: 4,
      description: "Steps closed per minute. Bad: 0 while the run is not finished (paused, or " +
        "stuck); falling while the workers stay: stragglers hold steps to their deadline " +
        "(see Stragglers and health).",
      queries: [{ expr: `${rate("demod_steps_total")} * 60`, legend: "steps/min" }],
    }),
    stat({
      title: "Time to finish", unit: "dtdurations", w: 4,
      description: "Steps left divided by the current step rate. Empty while no step closes " +
        "(paused or finished). Bad: growing, the run is slowing down.",
      queries: [{
        expr: `(${m("demod_total_steps")} - ${m("demod_current_step")})` +
          ` / (${rate("demod_steps_total")} > 0)`,
        legend: "time to finish",
      }],
    }),
    stat({
      title: "Run state", unit: "none", w: 4, mappings: paused,
      description: "Training, or paused because fewer than min_workers workers are present. " +
        "Bad: paused; bring workers back (see Workers) or lower min_workers.",
      queries: [{ expr: m("demod_paused"), legend: "state" }],
    }),
    stat({
      title: "Workers", unit: "none", w: 4, names: true,
      description: "Workers contributing now, workers the last closed step expected a payload " +
        "from, and the minimum the run needs. Bad: active below min (the run pauses) or below " +
        "expected (workers left or were evicted).",
      queries: [
        { expr: m("demod_active_workers"), legend: "active" },
        { expr: m("demod_step_expected_contributors"), legend: "expected" },
        { expr: m("demod_min_workers"), legend: "min" },
      ],
    }),
    timeseries({
      title: "Training loss", unit: "none", w: 12,
      description: "The mean of the present workers' latest training loss, and each worker's. " +
        "Bad: the mean rising or flat from the start (learning rate, data); one worker far " +
        "from the others (its data shard, or its parameters diverged: see fingerprint " +
        "mismatches).",
      queries: [
        { expr: m("demod_training_loss_mean"), legend: "mean" },
        { expr: m("demod_training_loss", WORKERS), legend: "{{worker}}" },
      ],
    }),
    timeseries({
      title: "Validation loss per worker", unit: "none", w: 12,
      description: "Each worker's latest validation loss. Bad: rising while training loss " +
        "falls (overfitting), or workers far apart.",
      queries: [{ expr: m("demod_validation_loss", WORKERS), legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Steps per minute", unit: "count:steps/min", w: 8,
      description: "Steps closed per minute over time. Bad: dips to 0 (pauses) or a steady " +
        "fall (stragglers, or a slow worker joined).",
      queries: [{ expr: `${rate("demod_steps_total")} * 60`, legend: "steps/min" }],
    }),
    timeseries({
      title: "Tokens per second", unit: "count:tok/s", w: 8,
      description: "Training tokens per second that the chosen workers report done, summed. " +
        "Bad: falling while the worker count stays (slower steps, stragglers).",
      queries: [{ expr: `sum(${rate("demod_tokens_total", WORKERS)})`, legend: "tokens/s" }],
    }),
    timeseries({
      title: "Learning rate", unit: "sci", w: 8,
      description: "The learning rate of the last completed step's update: warmup, then the " +
        "schedule. Bad: not what the run's configuration asks for.",
      queries: [{ expr: m("demod_learning_rate"), legend: "learning rate" }],
    }),
    timeseries({
      title: "Workers", unit: "none", w: 24, decimals: 0,
      description: "Workers contributing, workers the last closed step expected, and the " +
        "run's min_workers. Bad: active below min (paused), or dropping (leaves and " +
        "evictions: see Stragglers and health).",
      queries: [
        { expr: m("demod_active_workers"), legend: "active" },
        { expr: m("demod_step_expected_contributors"), legend: "expected" },
        { expr: m("demod_min_workers"), legend: "min" },
      ],
    }),
  ]);

// Compression against an fp32 all-reduce of the gradients: what it would have moved over what
// the coordinator moved (received + sent).
const compression = (counter: (metric: string) => string) =>
  `${counter("demod_dense_equivalent_bytes_total")}` +
  ` / (${counter("demod_received_bytes_total")} + ${counter("demod_sent_bytes_total")})`;
const compressionThresholds: Array<[number, string]> = [[0, "red"], [1, "orange"], [10, "green"]];

const bandwidth = dashboard("demod-bandwidth", "demod / Bandwidth",
  "Bytes between the coordinator and the workers, and what DeMo saves against an fp32 " +
  "all-reduce.", [
    stat({
      title: "Compression vs fp32 all-reduce", unit: "suffix:×", w: 6, decimals: 1,
      thresholds: compressionThresholds,
      description: "Bytes an fp32 all-reduce of the gradients would have moved, divided by the " +
        "bytes the coordinator received and sent, since it started. Bad: near 1× or below " +
        "(top-k, chunk size or value encoding send more than they should).",
      queries: [{ expr: compression((metric) => m(metric)), legend: "compression" }],
    }),
    stat({
      title: "Up (workers to coordinator)", unit: "Bps", w: 6,
      description: "Bytes per second the coordinator receives from all workers (their " +
        "payloads). Bad: near the coordinator's network capacity.",
      queries: [{ expr: rate("demod_received_bytes_total"), legend: "up" }],
    }),
    stat({
      title: "Down (coordinator to workers)", unit: "Bps", w: 6,
      description: "Bytes per second the coordinator sends to all workers (each step's " +
        "aggregate, state transfers). Bad: near the coordinator's network capacity.",
      queries: [{ expr: rate("demod_sent_bytes_total"), legend: "down" }],
    }),
    stat({
      title: "Moved since the coordinator started", unit: "decbytes", w: 6,
      description: "Bytes the coordinator received and sent, in total.",
      queries: [{
        expr: `${m("demod_received_bytes_total")} + ${m("demod_sent_bytes_total")}`,
        legend: "moved",
      }],
    }),
    timeseries({
      title: "Bytes up per worker", unit: "Bps", w: 12, stack: true,
      description: "Bytes per second the coordinator receives from each worker, stacked. Bad: " +
        "one worker far above the others (a different configuration), or 0 for a worker that " +
        "is present (it stopped sending).",
      queries: [{ expr: rate("demod_worker_received_bytes_total", WORKERS),
                  legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Bytes down per worker", unit: "Bps", w: 12, stack: true,
      description: "Bytes per second the coordinator sends to each worker, stacked. Bad: 0 " +
        "for a worker that is present (it no longer receives aggregates).",
      queries: [{ expr: rate("demod_worker_sent_bytes_total", WORKERS), legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Total up and down vs fp32 all-reduce", unit: "Bps", w: 12,
      description: "Bytes per second received and sent by the coordinator, and what an fp32 " +
        "all-reduce of the gradients would move at the same step rate. Bad: up + down close " +
        "to the all-reduce line.",
      queries: [
        { expr: rate("demod_received_bytes_total"), legend: "up (received)" },
        { expr: rate("demod_sent_bytes_total"), legend: "down (sent)" },
        { expr: rate("demod_dense_equivalent_bytes_total"), legend: "fp32 all-reduce" },
      ],
    }),
    timeseries({
      title: "Compression ratio over time", unit: "suffix:×", w: 12, decimals: 1,
      thresholds: compressionThresholds,
      description: "Compression against an fp32 all-reduce over each rate window. Bad: " +
        "falling (more workers send larger payloads, or state transfers dominate) or near 1×.",
      queries: [{ expr: compression((metric) => rate(metric)), legend: "compression" }],
    }),
    timeseries({
      title: "Payload and aggregate per worker per step", unit: "decbytes", w: 12,
      description: "The encoded step messages, without framing: each worker's payload (up) " +
        "and the aggregate it receives (down), per step; the same numbers as the workers' " +
        "CSVs. The aggregate is larger than a payload: it merges every worker's " +
        "coefficients. Bad: the aggregate growing with the worker count towards the dense size.",
      queries: [
        { expr: `${rate("demod_worker_payload_bytes_total", WORKERS)}` +
                ` / ignoring(worker) group_left() ${rate("demod_steps_total")}`,
          legend: "{{worker}} payload (up)" },
        { expr: `${rate("demod_worker_aggregate_bytes_total", WORKERS)}` +
                ` / ignoring(worker) group_left() ${rate("demod_steps_total")}`,
          legend: "{{worker}} aggregate (down)" },
      ],
    }),
    timeseries({
      title: "Bytes per step", unit: "decbytes", w: 12,
      description: "Bytes the coordinator moved per step (all workers, up + down), and what an " +
        "fp32 all-reduce would move per step. Bad: rising without more workers.",
      queries: [
        { expr: `(${rate("demod_received_bytes_total")} + ${rate("demod_sent_bytes_total")})` +
                ` / ${rate("demod_steps_total")}`,
          legend: "moved (up + down)" },
        { expr: `${rate("demod_dense_equivalent_bytes_total")} / ${rate("demod_steps_total")}`,
          legend: "fp32 all-reduce" },
      ],
    }),
  ]);

const percentiles = (histogram: string) => [0.5, 0.9, 0.99].map((q) => ({
  expr: quantile(q, histogram),
  legend: `p${q * 100}`,
}));
const anyIsBad: Array<[number, string]> = [[1, "red"]];

const stragglers = dashboard("demod-stragglers", "demod / Stragglers and health",
  "Who holds steps up, who misses them, who leaves or is evicted, and whether the run's " +
  "state is sound.", [
    { row: "Step timing" },
    timeseries({
      title: "Step duration", unit: "s", w: 12,
      description: "Time from a step opening to its closing, p50, p90 and p99. Bad: p99 at " +
        "the step deadline (someone did not send), or a rising p50 (everyone slower).",
      queries: percentiles("demod_step_duration_seconds"),
    }),
    timeseries({
      title: "Barrier wait", unit: "s", w: 12,
      description: "Time from a step's first payload to its close (its last payload, or its " +
        "deadline): what the fastest worker waited for the slowest. p50, p90, p99. Bad: a " +
        "large share of the step duration, a straggler is holding the run back.",
      queries: percentiles("demod_barrier_wait_seconds"),
    }),
    timeseries({
      title: "Contributors of the last closed step", unit: "none", w: 12, decimals: 0,
      description: "Workers whose payload the last closed step included, against those it " +
        "expected. Bad: contributors below expected (short steps).",
      queries: [
        { expr: m("demod_step_contributors"), legend: "contributors" },
        { expr: m("demod_step_expected_contributors"), legend: "expected" },
      ],
    }),
    timeseries({
      title: "Consecutive short steps", unit: "none", w: 12, decimals: 0,
      thresholds: [[1, "orange"], [3, "red"]],
      description: "Steps in a row, up to the last closed one, that closed with fewer " +
        "contributors than expected; 0 after a full step. Bad: staying above 0, a worker " +
        "keeps missing steps and will be evicted.",
      queries: [{ expr: m("demod_consecutive_short_steps"), legend: "short steps in a row" }],
    }),
    { row: "Contributions per worker" },
    timeseries({
      title: "Contribution rate per worker", unit: "percentunit", w: 8, min: 0, max: 1,
      description: "Share of the closed steps that included each worker's payload " +
        "(1 - missed / steps). Bad: below 100%, that worker is a straggler.",
      queries: [{
        expr: `1 - ${rate("demod_missed_contributions_total", WORKERS)}` +
          ` / ignoring(worker) group_left() ${rate("demod_steps_total")}`,
        legend: "{{worker}}",
      }],
    }),
    timeseries({
      title: "Late contributions per worker", unit: "cpm", w: 8,
      description: "Payloads per minute that arrived after their step had closed. Bad: above " +
        "0, the worker is slower than the step deadline.",
      queries: [{ expr: `${rate("demod_late_contributions_total", WORKERS)} * 60`,
                  legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Missed contributions per worker", unit: "cpm", w: 8,
      description: "Steps per minute that closed without the worker's payload. Bad: above 0; " +
        "a worker that misses several steps in a row is evicted.",
      queries: [{ expr: `${rate("demod_missed_contributions_total", WORKERS)} * 60`,
                  legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Batch share (samples per step)", unit: "none", w: 12, decimals: 0, stack: true,
      description: "With batch balancing (batch: {global: N, balance: true}; empty without): " +
        "the samples of each step each worker is told to compute, stacked, so that with all " +
        "workers chosen the stack is the global batch N. Bad: a worker's share shrinking " +
        "while the others' grow, that worker is slower (a busy or throttled machine).",
      queries: [{ expr: m("demod_worker_batch_samples", WORKERS), legend: "{{worker}}" }],
    }),
    timeseries({
      title: "Measured throughput (samples/s)", unit: "count:samples/s", w: 12,
      description: "Each worker's compute throughput over its latest report: samples " +
        "(sequences) per second of forward and backward, what batch balancing shares the " +
        "global batch by. Bad: one worker well below the others, a straggler.",
      queries: [{ expr: m("demod_worker_samples_per_second", WORKERS), legend: "{{worker}}" }],
    }),
    { row: "Membership" },
    timeseries({
      title: "Joins, leaves and evictions", unit: "cpm", w: 12,
      description: "Workers admitted, leaving and evicted per minute. Bad: a steady churn of " +
        "leaves or evictions (crashing workers, a flaky network, deadlines too tight).",
      queries: [
        { expr: `${rate("demod_joins_total")} * 60`, legend: "joins" },
        { expr: `sum(${rate("demod_leaves_total")}) * 60`, legend: "leaves" },
        { expr: `sum(${rate("demod_evictions_total")}) * 60`, legend: "evictions" },
      ],
    }),
    barGauge({
      title: "Evictions by reason", unit: "none", w: 4, decimals: 0, thresholds: anyIsBad,
      description: "Workers the coordinator removed since it started: missed_steps (too many " +
        "steps in a row without their payload) or heartbeat (silent). Bad: any.",
      queries: [{ expr: `sum by (reason) (${m("demod_evictions_total")})`,
                  legend: "{{reason}}", instant: true }],
    }),
    barGauge({
      title: "Evictions per worker", unit: "none", w: 4, decimals: 0, thresholds: anyIsBad,
      description: "Times the coordinator removed each worker since it started. Bad: one " +
        "worker evicted again and again (its machine is too slow or its link unreliable).",
      queries: [{ expr: `sum by (worker) (${m("demod_worker_evictions_total", WORKERS)})`,
                  legend: "{{worker}}", instant: true }],
    }),
    barGauge({
      title: "Leaves by reason", unit: "none", w: 4, decimals: 0,
      thresholds: [[1, "orange"]],
      description: "Workers that left since the coordinator started: disconnected, " +
        "invalid_message (refused: a bug or a version mismatch), shutdown (asked to stop), " +
        "slow_consumer (it stopped reading its stream) or finished (the run ended, the " +
        "normal end of every worker). " +
        "Bad: many disconnected, or any invalid_message.",
      queries: [{ expr: `sum by (reason) (${m("demod_leaves_total")})`,
                  legend: "{{reason}}", instant: true }],
    }),
    { row: "State and integrity" },
    stat({
      title: "State transfers", unit: "none", w: 4, decimals: 0,
      description: "Parameter transfers from a donor to a joining worker since the " +
        "coordinator started, one per join after the first. Bad: far more than joins.",
      queries: [{ expr: m("demod_state_transfers_total"), legend: "transfers" }],
    }),
    stat({
      title: "State transfer bytes", unit: "decbytes", w: 4,
      description: "Bytes of parameters streamed to joining workers since the coordinator " +
        "started. Bad: a large share of all bytes moved (see Bandwidth): frequent rejoins.",
      queries: [{ expr: m("demod_state_transfer_bytes_total"), legend: "bytes" }],
    }),
    timeseries({
      title: "State transfer rate", unit: "Bps", w: 8,
      description: "Bytes per second of parameters streamed to joining workers. Bad: long or " +
        "repeated bursts, workers keep rejoining.",
      queries: [{ expr: rate("demod_state_transfer_bytes_total"), legend: "state transfer" }],
    }),
    stat({
      title: "Failed state saves", unit: "none", w: 4, decimals: 0, thresholds: anyIsBad,
      description: "Saves of the run's state to the coordinator's state directory that failed " +
        "since it started. Bad: any, a restart would resume from an older state (check the " +
        "volume and the coordinator's log).",
      queries: [{ expr: m("demod_state_save_failures_total"), legend: "failed saves" }],
    }),
    barGauge({
      title: "Fingerprint mismatches per worker", unit: "none", w: 4, decimals: 0,
      thresholds: anyIsBad,
      description: "Reports whose parameter fingerprint disagreed with the run's, per worker, " +
        "since the coordinator started. Bad: any, that worker's parameters diverged from the " +
        "others'.",
      queries: [{ expr: `sum by (worker) (${m("demod_fingerprint_mismatches_total", WORKERS)})`,
                  legend: "{{worker}}", instant: true }],
    }),
  ]);

const hardware = dashboard("demod-hardware", "demod / Workers by hardware",
  "Throughput of the workers by the device they train on.", [
    stat({
      title: "Workers per device kind", unit: "none", w: 8, h: 6, names: true, decimals: 0,
      description: "Present workers by device kind (cpu, cuda, unspecified). Bad: fewer than " +
        "the pools should run (pods pending, crashing, or evicted).",
      queries: [{ expr: `count by (device_kind) (${m("demod_worker_info", WORKERS)})`,
                  legend: "{{device_kind}}" }],
    }),
    barGauge({
      title: "Tokens/s by device", unit: "count:tok/s", w: 8, h: 6,
      description: "Tokens per second of all present workers on each device, summed: where " +
        "the run's throughput comes from.",
      queries: [{ expr: `sum by (device_kind, device_name) (${TOKENS_PER_SECOND_BY_DEVICE})`,
                  legend: "{{device_kind}} {{device_name}}", instant: true }],
    }),
    barGauge({
      title: "Tokens/s per worker, mean by device", unit: "count:tok/s", w: 8, h: 6,
      description: "The mean tokens per second of one worker on each device. Bad: a device " +
        "far below what it should do (threads, batch size, a CPU fallback).",
      queries: [{ expr: `avg by (device_kind, device_name) (${TOKENS_PER_SECOND_BY_DEVICE})`,
                  legend: "{{device_kind}} {{device_name}}", instant: true }],
    }),
    timeseries({
      title: "Tokens/s per worker", unit: "count:tok/s", w: 12, h: 9,
      description: "Each worker's training throughput over its latest report, named with its " +
        "device. Bad: one worker well below others on the same device (a straggler: a busy " +
        "or throttled machine).",
      queries: [{ expr: TOKENS_PER_SECOND_BY_DEVICE,
                  legend: "{{worker}} ({{device_kind}} {{device_name}})" }],
    }),
    timeseries({
      title: "Tokens/s by device over time", unit: "count:tok/s", w: 12, h: 9, stack: true,
      description: "Tokens per second summed per device, stacked: the run's throughput by " +
        "hardware. Bad: a device's share dropping (its workers left or slowed down).",
      queries: [{ expr: `sum by (device_kind, device_name) (${TOKENS_PER_SECOND_BY_DEVICE})`,
                  legend: "{{device_kind}} {{device_name}}" }],
    }),
    table({
      title: "Workers and their devices", unit: "none", w: 24, h: 8, hide: ["Time", "Value"],
      description: "Every present worker with the device it joined with. Bad: a worker on " +
        "device_kind unspecified (an old worker), or on cpu where a GPU pool was meant.",
      queries: [{
        expr: `max by (worker, device_kind, device_name) (${m("demod_worker_info", WORKERS)})`,
        instant: true, table: true,
      }],
    }),
  ]);

/** The dashboards by file name in deploy/grafana/dashboards/. */
export const dashboards: Record<string, Dashboard> = {
  "run-overview.json": runOverview,
  "bandwidth.json": bandwidth,
  "stragglers.json": stragglers,
  "hardware.json": hardware,
};
