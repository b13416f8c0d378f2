import ColonyWire
import Foundation
import Logging
import Synchronization
import Testing

@testable import ColonyObservability

@Suite struct DashboardAccessTests {
    let key = Array(repeating: UInt8(7), count: 32)

    @Test func theTokenComesFromTheAuthkeyAndDoesNotRevealIt() {
        let token = DashboardAccess.token(authKey: key)
        #expect(token.count == 64)
        #expect(token == DashboardAccess.token(authKey: key))
        #expect(token != DashboardAccess.token(authKey: Array(repeating: 8, count: 32)))
        #expect(!token.contains(AuthKey.hex(key)))
    }

    @Test func offLoopbackOnlyTheRightTokenOpensTheDashboard() {
        let access = DashboardAccess(authKey: key, requiresToken: true)
        let token = access.token
        #expect(!access.allows(path: "/", authorization: nil, cookie: nil, queryToken: nil))
        #expect(!access.allows(path: "/api/status", authorization: "Bearer " + String(token.dropLast()) + "0", cookie: nil, queryToken: nil))
        #expect(!access.allows(path: "/api/status", authorization: token, cookie: nil, queryToken: nil))  // not a bearer header
        #expect(!access.allows(path: "/metrics", authorization: nil, cookie: "wrong", queryToken: "also wrong"))
        #expect(access.allows(path: "/api/status", authorization: "Bearer \(token)", cookie: nil, queryToken: nil))
        #expect(access.allows(path: "/api/events", authorization: nil, cookie: token, queryToken: nil))
        #expect(access.allows(path: "/", authorization: nil, cookie: nil, queryToken: token))
    }

    @Test func metricsCanBeOpenedToScrapersAlone() {
        let access = DashboardAccess(authKey: key, requiresToken: true, metricsArePublic: true)
        #expect(access.allows(path: "/metrics", authorization: nil, cookie: nil, queryToken: nil))
        #expect(!access.allows(path: "/api/status", authorization: nil, cookie: nil, queryToken: nil))
        #expect(DashboardAccess(authKey: key, requiresToken: false).allows(path: "/", authorization: nil, cookie: nil, queryToken: nil))
    }

    @Test func loopbackIsOnly127SlashEightAndOneColonColonOne() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] { #expect(DashboardAccess.isLoopback(host: host), "\(host)") }
        for host in ["0.0.0.0", "::", "10.0.0.1", "127.0.0.256", "127.0.0", "example.com", "128.0.0.1"] {
            #expect(!DashboardAccess.isLoopback(host: host), "\(host)")
        }
    }

    @Test func listenAddressesParseOrSayWhatIsWrong() throws {
        #expect(try HTTPListenAddress(parsing: "127.0.0.1:9090") == HTTPListenAddress(host: "127.0.0.1", port: 9090))
        #expect(try HTTPListenAddress(parsing: "[::1]:0") == HTTPListenAddress(host: "::1", port: 0))
        #expect(try HTTPListenAddress(parsing: "[::1]:0").urlHost == "[::1]")
        for bad in ["9090", ":9090", "host:", "host:70000", "host:-1", "[::1:80"] {
            #expect(throws: DashboardError.self, "\(bad)") { try HTTPListenAddress(parsing: bad) }
        }
    }
}

@Suite struct StatusSeriesTests {
    let status: WireValue = [
        "uptime": 12.5,
        "memory": ["used": 1000, "limit": 4000, "refused": 2],
        "sessions": [["role": "client"], ["role": "client"], ["role": "worker"], ["role": "made-up"]],
        "object_types": [["type": "dict", "count": 1, "items": 3, "waiting": 0], ["type": "queue", "count": 2, "items": 8, "waiting": 2]],
        "named_queues": [["name": "jobs", "size": 7]],
        "counters": ["connections_accepted": 5],
        "pools": [
            [
                "id": 9, "name": "default", "queued": 4, "running": 2, "jobs": 1, "submitted": 10, "done": 4, "failed": 1, "retried": 0,
                "workers": [["node": "a", "processes": 2, "busy": 2], ["node": "a", "processes": 1, "busy": 0], ["node": "b", "processes": 3, "busy": 0]],
            ]
        ],
    ]

    @Test func aStatusBecomesGaugesAndCounters() {
        let series = StatusSeries(status)
        #expect(series.gauges[SeriesKey("colony_uptime_seconds")] == 12.5)
        #expect(series.gauges[SeriesKey("colony_sessions", [("role", "client")])] == 2)
        #expect(series.gauges[SeriesKey("colony_sessions", [("role", "other")])] == 1)
        #expect(series.gauges[SeriesKey("colony_sessions", [("role", "handshaking")])] == 0)
        #expect(series.gauges[SeriesKey("colony_objects", [("type", "queue")])] == 2)
        #expect(series.gauges[SeriesKey("colony_object_items", [("type", "queue")])] == 8)
        #expect(series.gauges[SeriesKey("colony_parked_calls", [("type", "queue")])] == 2)
        #expect(series.gauges[SeriesKey("colony_queue_items", [("name", "jobs")])] == 7)
        #expect(series.counters[SeriesKey("colony_connections_accepted_total")] == 5)
        #expect(series.counters[SeriesKey("colony_memory_refused_requests_total")] == 2)
        let pool = [("pool", "default")]
        #expect(series.gauges[SeriesKey("colony_pool_nodes", pool)] == 2)
        #expect(series.gauges[SeriesKey("colony_pool_processes", pool)] == 6)
        #expect(series.gauges[SeriesKey("colony_pool_busy", pool)] == 2)
        #expect(series.gauges[SeriesKey("colony_pool_calls_queued", pool)] == 4)
        #expect(series.counters[SeriesKey("colony_pool_calls_total", pool + [("outcome", "failed")])] == 1)
    }

    @Test func scrapesAdvanceCountersAndDropSeriesThatAreGone() {
        let exporter = PrometheusExporter()
        let first = String(decoding: exporter.scrape(status), as: UTF8.self)
        #expect(first.contains("colony_queue_items{name=\"jobs\"} 7"))
        #expect(first.contains("colony_connections_accepted_total 5"))
        #expect(first.contains("# HELP colony_pool_calls_total"))
        let later: WireValue = ["uptime": 13.0, "object_types": [], "named_queues": [], "counters": ["connections_accepted": 8]]
        let second = String(decoding: exporter.scrape(later), as: UTF8.self)
        #expect(second.contains("colony_connections_accepted_total 8"))
        #expect(!second.contains("colony_queue_items"))
        #expect(!second.contains("colony_pool_nodes"))
    }
}

@Suite struct JSONLogHandlerTests {
    @Test func eachLineIsOneObjectWithTheMetadataAsFields() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "colony.manager") { label in JSONLogHandler(label: label) { line in lines.withLock { $0.append(line) } } }
        logger[metadataKey: "session"] = "7"
        logger[metadataKey: "role"] = "worker"
        logger.notice("handshake failed", metadata: ["peer": "127.0.0.1:5000", "detail": ["a", "b"]])
        logger.debug("below the level: not written")
        let written = lines.withLock { $0 }
        #expect(written.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(written[0].utf8)) as? [String: Any])
        #expect(object["message"] as? String == "handshake failed")
        #expect(object["level"] as? String == "notice")
        #expect(object["label"] as? String == "colony.manager")
        #expect(object["session"] as? String == "7")
        #expect(object["role"] as? String == "worker")
        #expect(object["peer"] as? String == "127.0.0.1:5000")
        #expect(object["detail"] as? [String] == ["a", "b"])
        #expect((object["time"] as? String)?.hasSuffix("Z") == true)
        #expect(!written[0].contains("\n"))
    }
}
