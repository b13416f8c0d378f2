import Colony
import ColonyServer
import ColonyWire
import Foundation
import Testing

@testable import ColonyObservability

/// A manager in this process with metrics on, so that the ThreadSanitizer sees scrapes and
/// the event stream's snapshots race the sessions that count.
@Suite(.serialized) struct ObservedManagerTests {
    let key = Array(repeating: UInt8(4), count: 32)

    /// A plaintext manager in this process on an ephemeral port, counting into `exporter`.
    private func startManager(eventLoopThreads: Int, exporter: PrometheusExporter) async throws -> (ManagerServer, port: Int) {
        var configuration = ManagerConfiguration(host: "127.0.0.1", port: 0, transport: .insecurePlaintext, authKey: key)
        configuration.eventLoopThreads = eventLoopThreads
        configuration.metrics = exporter.metrics
        let server = try ManagerServer(configuration: configuration)
        return (server, try await server.start().port!)
    }

    @Test func scrapesWhileSessionsWorkCountEveryRequest() async throws {
        let exporter = PrometheusExporter()
        let (server, port) = try await startManager(eventLoopThreads: 2, exporter: exporter)
        let dashboard = try Dashboard(
            manager: server, exporter: exporter,
            configuration: DashboardConfiguration(host: "127.0.0.1", port: 0, access: DashboardAccess(authKey: key, requiresToken: false)))
        let bound = try await dashboard.start()
        #expect(bound.port != nil)

        let scraping = Task.detached {
            var scrapes = 0
            while !Task.isCancelled {
                _ = exporter.scrape(server.statusReport())
                _ = try server.statusReport(objectRowLimit: Dashboard.objectRows).jsonData()
                scrapes += 1
                try? await Task.sleep(for: .milliseconds(2))
            }
            return scrapes
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<4 {
                group.addTask {
                    let manager = try await Manager.connect(port: port, authKey: key, trust: .insecurePlaintext)
                    let dict = try await manager.dict("shared", String.self, Int.self)
                    for index in 0..<200 { try await dict.set("c\(client)-\(index)", index) }
                    await manager.close()
                }
            }
            try await group.waitForAll()
        }
        scraping.cancel()
        #expect(try await scraping.value > 0)
        let text = String(decoding: exporter.scrape(server.statusReport(objectRowLimit: 0)), as: UTF8.self)
        #expect(text.contains(#"colony_requests_total{type="dict",method="setitem"} 800"#))
        #expect(text.contains(#"colony_object_items{type="dict"} 800"#))
        await dashboard.shutdown()
        await server.shutdown()
    }

    /// Heavy requests run on the offload pool while parked calls of the same session are
    /// answered and other sessions of the event loop go on; the loop still counts them.
    @Test func heavyRequestsRunOffTheLoopAndAreCountedThere() async throws {
        let exporter = PrometheusExporter()
        let (server, port) = try await startManager(eventLoopThreads: 1, exporter: exporter)
        let heavy = try await Manager.connect(port: port, authKey: key, trust: .insecurePlaintext)
        let light = try await Manager.connect(port: port, authKey: key, trust: .insecurePlaintext)
        let items = try await heavy.list(nil, Int.self)
        let jobs = try await heavy.queue("jobs", Int.self)
        let lightJobs = try await light.queue("jobs", Int.self)
        let waiting = Task { try await jobs.get(timeout: 30) }  // parked on the heavy session
        let bigJobs = try await heavy.queue("big jobs", [Int].self)
        let lightBigJobs = try await light.queue("big jobs", [Int].self)
        let waitingForBig = Task { try await bigJobs.get(timeout: 30) }  // its answer is heavy
        let rounds = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for round in 0..<rounds {
                    try await items.extend(Array(repeating: round, count: 40_000))  // over 128 KiB
                    #expect(try await items.copy().count == 40_000 * (round + 1))
                }
                _ = try await heavy.status()
            }
            group.addTask {
                let scratch = try await light.dict(nil, String.self, Int.self)
                for index in 0..<400 { try await scratch.set("k", index) }
                try await lightJobs.put(7)
                try await lightBigJobs.put(Array(0..<70_000))
            }
            try await group.waitForAll()
        }
        #expect(try await waiting.value == 7)
        #expect(try await waitingForBig.value == Array(0..<70_000))
        let text = String(decoding: exporter.scrape(server.statusReport(objectRowLimit: 0)), as: UTF8.self)
        #expect(text.contains(#"colony_requests_total{type="list",method="extend"} \#(rounds)"#), "\(text)")
        #expect(text.contains(#"colony_requests_total{type="list",method="copy"} \#(rounds)"#))
        #expect(text.contains(#"colony_requests_total{type="dict",method="setitem"} 400"#))
        #expect(text.contains(#"colony_requests_total{type="manager",method="status"} 1"#))
        // A small request for a big value: its answer is encoded off the loop.
        let values = try await heavy.dict(nil, String.self, [Int].self)
        try await values.set("big", Array(0..<70_000))
        #expect(try await values.get("big").count == 70_000)
        await heavy.close()
        await light.close()
        await server.shutdown()
    }
}
