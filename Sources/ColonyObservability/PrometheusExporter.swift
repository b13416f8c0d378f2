import ColonyServer
import ColonyWire
import Prometheus
import Synchronization

/// The manager's metrics as Prometheus text (`/metrics`). Counted as they happen: what
/// `metrics` hands the manager (requests, durations, errors, handshakes, sessions). Read at
/// each scrape from `statusReport()`: sessions open, objects and their sizes, named queues'
/// depths, parked calls, the manager's counters (connections, busy polls, cycles), memory,
/// persistence and pools.
public final class PrometheusExporter: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// Give this to `ManagerConfiguration.metrics`.
    public let metrics: ManagerMetrics
    private let scraped: Mutex<ScrapedSeries>

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Requests take microseconds; parked ones up to their timeouts.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(100),
            .milliseconds(250), .seconds(1), .seconds(5), .seconds(30),
        ]
        metrics = ManagerMetrics(factory: factory)
        scraped = Mutex(ScrapedSeries(registry: registry))
    }

    /// The text a scrape gets, with the status-based series brought up to date from `status`
    /// (`ManagerServer.statusReport(objectRowLimit:)`: objects summed by type).
    public func scrape(_ status: WireValue) -> [UInt8] {
        scraped.withLock { $0.update(from: status) }
        return registry.emitToBuffer()
    }
}

/// One series: a metric name and its labels.
struct SeriesKey: Hashable {
    var name: String
    var labels: [String]

    init(_ name: String, _ labels: [(String, String)] = []) {
        self.name = name
        self.labels = labels.flatMap { [$0.0, $0.1] }
    }

    var labelPairs: [(String, String)] { stride(from: 0, to: labels.count, by: 2).map { (labels[$0], labels[$0 + 1]) } }

    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: StatusSeries.help[name] ?? "The manager's counter of that name, as colony status shows it.")
    }
}

/// The series read from the status: gauges set to the value now, counters advanced by what
/// they grew since the last scrape. A series absent from this status (an object type no
/// longer held, a pool gone) is unregistered so that it stops being reported.
struct ScrapedSeries {
    let registry: PrometheusCollectorRegistry
    private var gauges: [SeriesKey: Gauge] = [:]
    private var counters: [SeriesKey: (counter: Counter, value: Int64)] = [:]

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    mutating func update(from status: WireValue) {
        let values = StatusSeries(status)
        for (key, value) in values.gauges {
            let gauge = gauges[key] ?? registry.makeGauge(descriptor: key.descriptor, labels: key.labelPairs)
            gauges[key] = gauge
            gauge.set(value)
        }
        for (key, value) in values.counters {
            let known = counters[key] ?? (registry.makeCounter(descriptor: key.descriptor, labels: key.labelPairs), 0)
            if value > known.value { known.counter.increment(by: value - known.value) }
            counters[key] = (known.counter, max(value, known.value))
        }
        for key in Set(gauges.keys).subtracting(values.gauges.keys) { registry.unregisterGauge(gauges.removeValue(forKey: key)!) }
        for key in Set(counters.keys).subtracting(values.counters.keys) { registry.unregisterCounter(counters.removeValue(forKey: key)!.counter) }
    }
}

/// The Prometheus series a status report holds (pure: tests feed it reports).
struct StatusSeries {
    private(set) var gauges: [SeriesKey: Double] = [:]
    private(set) var counters: [SeriesKey: Int64] = [:]

    static let help = [
        "colony_uptime_seconds": "Seconds since the manager started.",
        "colony_memory_used_bytes": "Memory the manager holds for objects and partial messages.",
        "colony_memory_limit_bytes": "The most memory the manager may hold (--max-memory).",
        "colony_memory_refused_requests_total": "Requests refused because they would pass --max-memory.",
        "colony_sessions": "Sessions open, by role.",
        "colony_objects": "Objects held, by type.",
        "colony_object_items": "Items in the objects held (entries, elements, queued items), by type.",
        "colony_parked_calls": "Calls waiting on objects (a get on an empty queue, an acquire), by type.",
        "colony_queue_items": "Items in each named queue.",
        "colony_journal_bytes": "Size of the persistence journal.",
        "colony_snapshot_bytes": "Size of the last persistence snapshot.",
        "colony_journal_failing": "1 while writing or syncing the journal fails.",
        "colony_journal_records_total": "Records written to the journal since the start.",
        "colony_journal_syncs_total": "Journal syncs since the start.",
        "colony_journal_compactions_total": "Journal compactions into a snapshot since the start.",
        "colony_pool_nodes": "Worker nodes in each pool.",
        "colony_pool_processes": "Worker processes in each pool.",
        "colony_pool_busy": "Worker processes running calls, by pool.",
        "colony_pool_calls_queued": "Calls waiting for a worker, by pool.",
        "colony_pool_calls_running": "Calls being run, by pool.",
        "colony_pool_jobs": "Jobs not yet taken in full, by pool.",
        "colony_pool_calls_total": "Pool calls by outcome: submitted, done, failed, retried.",
    ]

    /// Roles a session may report; peers choose their role's word, so others are "other".
    static let roles: Set<String> = ["client", "worker", "handshaking"]

    init(_ status: WireValue) {
        gauges[SeriesKey("colony_uptime_seconds")] = status["uptime"]?.doubleValue ?? 0
        if let memory = status["memory"], memory != .null {
            gauges[SeriesKey("colony_memory_used_bytes")] = Double(memory["used"]?.int64Value ?? 0)
            gauges[SeriesKey("colony_memory_limit_bytes")] = Double(memory["limit"]?.int64Value ?? 0)
            counters[SeriesKey("colony_memory_refused_requests_total")] = memory["refused"]?.int64Value ?? 0
        }
        for role in Self.roles { gauges[SeriesKey("colony_sessions", [("role", role)])] = 0 }
        for session in status["sessions"]?.arrayValue ?? [] {
            let role = session["role"]?.stringValue.flatMap { Self.roles.contains($0) ? $0 : nil } ?? "other"
            gauges[SeriesKey("colony_sessions", [("role", role)]), default: 0] += 1
        }
        for row in status["object_types"]?.arrayValue ?? [] {
            let type = [("type", row["type"]?.stringValue ?? "?")]
            gauges[SeriesKey("colony_objects", type)] = Double(row["count"]?.int64Value ?? 0)
            gauges[SeriesKey("colony_object_items", type)] = Double(row["items"]?.int64Value ?? 0)
            gauges[SeriesKey("colony_parked_calls", type)] = Double(row["waiting"]?.int64Value ?? 0)
        }
        for queue in status["named_queues"]?.arrayValue ?? [] {
            guard let name = queue["name"]?.stringValue else { continue }
            gauges[SeriesKey("colony_queue_items", [("name", name)])] = Double(queue["size"]?.int64Value ?? 0)
        }
        for pair in status["counters"]?.mapValue ?? [] {
            guard let name = pair.key.stringValue, let value = pair.value.int64Value else { continue }
            counters[SeriesKey("colony_\(name)_total")] = value
        }
        if let persistence = status["persistence"], persistence != .null {
            gauges[SeriesKey("colony_journal_bytes")] = Double(persistence["bytes"]?.int64Value ?? 0)
            gauges[SeriesKey("colony_snapshot_bytes")] = Double(persistence["snapshot_bytes"]?.int64Value ?? 0)
            gauges[SeriesKey("colony_journal_failing")] = persistence["failure"]?.stringValue == nil ? 0 : 1
            counters[SeriesKey("colony_journal_records_total")] = persistence["records"]?.int64Value ?? 0
            counters[SeriesKey("colony_journal_syncs_total")] = persistence["syncs"]?.int64Value ?? 0
            counters[SeriesKey("colony_journal_compactions_total")] = persistence["compactions"]?.int64Value ?? 0
        }
        for pool in status["pools"]?.arrayValue ?? [] {
            let label = [("pool", pool["name"]?.stringValue ?? "#\(pool["id"]?.int64Value ?? 0)")]
            let workers = pool["workers"]?.arrayValue ?? []
            let figure = { (row: WireValue, key: String) in Double(row[key]?.int64Value ?? 0) }
            gauges[SeriesKey("colony_pool_nodes", label)] = Double(Set(workers.compactMap { $0["node"]?.stringValue }).count)
            gauges[SeriesKey("colony_pool_processes", label)] = workers.reduce(0) { $0 + figure($1, "processes") }
            gauges[SeriesKey("colony_pool_busy", label)] = workers.reduce(0) { $0 + figure($1, "busy") }
            gauges[SeriesKey("colony_pool_calls_queued", label)] = figure(pool, "queued")
            gauges[SeriesKey("colony_pool_calls_running", label)] = figure(pool, "running")
            gauges[SeriesKey("colony_pool_jobs", label)] = figure(pool, "jobs")
            for outcome in ["submitted", "done", "failed", "retried"] {
                counters[SeriesKey("colony_pool_calls_total", label + [("outcome", outcome)])] = pool[outcome]?.int64Value ?? 0
            }
        }
    }
}
