import Colony
import ColonyServer
import ColonyWire
import Foundation
import Testing

@testable import ColonyObservability

/// A manager in this process with metrics on, so that the ThreadSanitizer sees scrapes and
/// the event stream's snapshots race the sessions that count.
@Suite(.serialized) struct ObservedManagerTests {
    @Test func scrapesWhileSessionsWorkCountEveryRequest() async throws {
        let key = Array(repeating: UInt8(4), count: 32)
        let exporter = PrometheusExporter()
        var configuration = ManagerConfiguration(host: "127.0.0.1", port: 0, transport: .insecurePlaintext, authKey: key)
        configuration.eventLoopThreads = 2
        configuration.metrics = exporter.metrics
        let server = try ManagerServer(configuration: configuration)
        let address = try await server.start()
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
                    let manager = try await Manager.connect(port: address.port!, authKey: key, trust: .insecurePlaintext)
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
}
