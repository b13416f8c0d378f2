import ColonyWire
import CoreMetrics

/// What the manager counts while it runs, made through a swift-metrics factory (`colony
/// manager --http-listen` passes swift-prometheus's, and serves it at `/metrics`). Without
/// one (`ManagerConfiguration.metrics` nil) the sessions do no metric work at all.
///
/// Counted as it happens: requests and their durations by object type and method, request
/// errors by code, handshake failures by reason, sessions by role. What can be read at any
/// time (objects, sessions open, queue depths, pools) is read from `statusReport()` when
/// scraped instead of being counted on the hot path.
public final class ManagerMetrics: Sendable {
    let factory: any MetricsFactory
    private let handshakeFailures: [String: Counter]
    private let sessionsOpened: [String: Counter]
    private let requestErrors: [UInt16: Counter]

    /// Roles a peer may say; any other is counted as "other" (labels never come from peers).
    static let roles = ["client", "worker"]
    /// The most distinct type and method pairs one event loop labels; calls beyond are
    /// counted under method "other" (method names come from peers).
    static let maxRequestKinds = 512

    public init(factory: any MetricsFactory) {
        self.factory = factory
        let reasons: [HandshakeFailure.Code] = [
            .authenticationFailed, .versionMismatch, .protocolViolation, .timedOut, .rejectedByPeer, .badConfiguration,
        ]
        handshakeFailures = Dictionary(
            uniqueKeysWithValues: reasons.map {
                ($0.description, Counter(label: "colony_handshake_failures_total", dimensions: [("reason", $0.description)], factory: factory))
            })
        sessionsOpened = Dictionary(
            uniqueKeysWithValues: (Self.roles + ["other"]).map {
                ($0, Counter(label: "colony_sessions_opened_total", dimensions: [("role", $0)], factory: factory))
            })
        requestErrors = Dictionary(
            uniqueKeysWithValues: ErrorCode.all.map {
                ($0.rawValue, Counter(label: "colony_request_errors_total", dimensions: [("code", $0.description)], factory: factory))
            })
    }

    func handshakeFailed(_ code: HandshakeFailure.Code) {
        handshakeFailures[code.description]?.increment()
    }

    func sessionOpened(role: String) {
        sessionsOpened[Self.roles.contains(role) ? role : "other"]?.increment()
    }

    func requestFailed(_ code: ErrorCode) {
        requestErrors[code.rawValue]?.increment()
    }
}

/// One event loop's request counters and timers, looked up by type and method. Sessions of
/// that loop share it; it is only touched on the loop's thread.
public final class RequestMeter {
    /// What one kind of request is counted and timed with.
    final class Kind {
        let requests: Counter
        let duration: Timer

        init(type: String, method: String, factory: any MetricsFactory) {
            let dimensions = [("type", type), ("method", method)]
            requests = Counter(label: "colony_requests_total", dimensions: dimensions, factory: factory)
            duration = Timer(label: "colony_request_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
        }

        func record(nanoseconds: UInt64) {
            requests.increment()
            duration.recordNanoseconds(Int64(clamping: nanoseconds))
        }
    }

    private struct Key: Hashable {
        var type: UInt8
        var method: String
    }

    let metrics: ManagerMetrics
    private var kinds: [Key: Kind] = [:]

    /// One per event loop (the manager makes them; benchmarks and embedders may too).
    public init(metrics: ManagerMetrics) { self.metrics = metrics }

    /// The counters of `method` called on a `type` object (`type` nil: a request to the
    /// manager itself, such as `new` or `release`).
    func kind(type: ObjectType?, method: String) -> Kind {
        let key = Key(type: type?.rawValue ?? 0, method: method)
        if let kind = kinds[key] { return kind }
        let capped = kinds.count < ManagerMetrics.maxRequestKinds ? key : Key(type: key.type, method: "other")
        if let kind = kinds[capped] { return kind }
        let made = Kind(type: type?.name ?? "manager", method: capped.method, factory: metrics.factory)
        kinds[capped] = made
        return made
    }
}
