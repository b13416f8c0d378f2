import ColonyWire
import MetricsTestKit
import Testing

@testable import ColonyServer

@Suite struct ManagerMetricsTests {
    let metrics = TestMetrics()

    func count(_ label: String, _ dimensions: [(String, String)]) -> Int64 {
        metrics.counterTotal(label: label, dimensions: dimensions)
    }

    @Test func requestsAreCountedAndTimedByTheTypeAndMethodTheyReached() throws {
        let context = TestContext()
        let meter = RequestMeter(metrics: ManagerMetrics(factory: metrics))
        let client = try TestClient(context, id: 1, meter: meter)
        #expect(count("colony_sessions_opened_total", [("role", "client")]) == 1)
        let dict = try client.new(.dict)
        _ = try client.call(dict, "setitem", "k", 1)
        _ = try client.call(dict, "setitem", "k", 2)
        #expect(try client.error(client.send(dict, "getitem", "missing")) == .keyError)
        #expect(try client.error(client.send(dict, "no such method")) == .unsupported)
        #expect(try client.error(client.send(999, "getitem", "k")) == .noSuchObject)

        #expect(count("colony_requests_total", [("type", "dict"), ("method", "new")]) == 1)
        #expect(count("colony_requests_total", [("type", "dict"), ("method", "setitem")]) == 2)
        #expect(count("colony_requests_total", [("type", "dict"), ("method", "getitem")]) == 1)
        // Names the peer made up label nothing: calls that reached no method are "invalid".
        #expect(count("colony_requests_total", [("type", "manager"), ("method", "invalid")]) == 2)
        #expect(metrics.counters(label: "colony_requests_total").count == 4)
        #expect(count("colony_request_errors_total", [("code", "KeyError")]) == 1)
        #expect(count("colony_request_errors_total", [("code", "Unsupported")]) == 1)
        #expect(count("colony_request_errors_total", [("code", "NoSuchObject")]) == 1)
        let timer = try metrics.expectTimer("colony_request_duration_seconds", [("type", "dict"), ("method", "setitem")])
        #expect(timer.values.count == 2)
    }

    @Test func aParkedCallIsTimedWhenItsAnswerComes() throws {
        let context = TestContext()
        let meter = RequestMeter(metrics: ManagerMetrics(factory: metrics))
        let waiter = try TestClient(context, id: 1, meter: meter)
        let putter = try TestClient(context, id: 2, meter: meter)
        let queue = try waiter.new(.queue)
        let get = try waiter.send(queue, "get", true, 5.0)
        #expect(try waiter.answer(get) == nil)
        let timer = try metrics.expectTimer("colony_request_duration_seconds", [("type", "queue"), ("method", "get")])
        #expect(timer.values.isEmpty)
        _ = try putter.call(queue, "put", "item")
        #expect(try waiter.answer(get) == .success("item"))
        #expect(timer.values.count == 1)
        #expect(count("colony_requests_total", [("type", "queue"), ("method", "get")]) == 1)
    }

    @Test func oneEventLoopLabelsAtMostSoManyKindsOfRequest() throws {
        let meter = RequestMeter(metrics: ManagerMetrics(factory: metrics))
        for index in 0..<(ManagerMetrics.maxRequestKinds + 10) {
            meter.kind(type: .dict, method: "method\(index)").record(nanoseconds: 1)
        }
        #expect(metrics.counters(label: "colony_requests_total").count == ManagerMetrics.maxRequestKinds + 1)
        #expect(count("colony_requests_total", [("type", "dict"), ("method", "other")]) == 10)
    }

    @Test func handshakeFailuresAreCountedByReason() throws {
        let manager = ManagerMetrics(factory: metrics)
        manager.handshakeFailed(.authenticationFailed)
        manager.handshakeFailed(.timedOut)
        manager.sessionOpened(role: "made up by the peer")
        #expect(count("colony_handshake_failures_total", [("reason", "authenticationFailed")]) == 1)
        #expect(count("colony_handshake_failures_total", [("reason", "timedOut")]) == 1)
        #expect(count("colony_sessions_opened_total", [("role", "other")]) == 1)
    }
}

@Suite struct ObjectSummaryTests {
    @Test func theSummaryCountsEveryObjectButListsOnlyTheLowestIds() throws {
        let store = ObjectStore()
        var dicts: [UInt64] = []
        for index in 0..<50 {
            let dict = try store.create(type: .dict, name: index == 7 ? "named dict" : nil, options: .null).id
            _ = try store.call(object: dict, method: "setitem", arguments: ["k", .integer(index)])
            dicts.append(dict)
        }
        let queue = try store.create(type: .queue, name: "jobs", options: .null).id
        for item in 0..<3 { _ = try store.call(object: queue, method: "put", arguments: [.integer(item)]) }
        _ = try store.create(type: .lifoQueue, name: nil, options: .null)

        let summary = store.summarizeObjects(rowLimit: 5)
        #expect(summary.total == 52)
        #expect(summary.rows.arrayValue?.compactMap { $0["id"]?.uint64Value } == Array(dicts.sorted().prefix(5)))
        #expect(summary.byType.arrayValue?.count == 3)
        let dictRow = try #require(summary.byType.arrayValue?.first { $0["type"] == "dict" })
        #expect(dictRow["count"] == 50 && dictRow["items"] == 50 && dictRow["waiting"] == 0)
        #expect(summary.namedQueues == [["name": "jobs", "size": 3]])
        #expect(store.summarizeObjects(rowLimit: 0).rows == [])
        #expect(store.summarizeObjects(rowLimit: 100).rows == store.describeObjects())
    }
}
