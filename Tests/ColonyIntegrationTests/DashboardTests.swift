import Colony
import Foundation
import Testing

/// The value of one Prometheus sample line (`name{labels} value`), if present.
func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// A manager with `--http-listen 127.0.0.1:0`, and the port its HTTP listener bound.
func startObservedManager(_ extra: [String] = []) throws -> (ManagerProcess, Int) {
    let state = NSTemporaryDirectory() + "colony-test-\(UUID().uuidString)"
    let portFile = state + "/http-port"
    let manager = try ManagerProcess(
        extraArguments: ["--http-listen", "127.0.0.1:0", "--http-port-file", portFile, "--persist", "off"] + extra, stateDirectory: state)
    let text = try String(contentsOfFile: portFile, encoding: .utf8)  // written before the manager's port file
    return (manager, try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines))))
}

@Suite(.serialized) struct DashboardIntegrationTests {
    @Test func metricsMoveWithTrafficAndTheStatusIsServedAsJSON() async throws {
        let (manager, httpPort) = try startObservedManager()
        let base = "http://127.0.0.1:\(httpPort)"
        let before = try await httpRequest(base + "/metrics")
        #expect(before.status == 200)
        #expect(before.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let setitems = #"colony_requests_total{type="dict",method="setitem"}"#
        #expect(sample(before.body, setitems) == nil)

        let client = try await manager.connect()
        let dict = try await client.dict("observed", String.self, Int.self)
        for index in 0..<25 { try await dict.set("k\(index)", index) }
        let during = try await httpRequest(base + "/metrics").body
        #expect(sample(during, setitems) == 25)
        #expect(sample(during, #"colony_request_duration_seconds_count{type="dict",method="setitem"}"#) == 25)
        #expect(sample(during, #"colony_sessions{role="client"}"#) == 1)
        #expect(sample(during, #"colony_objects{type="dict"}"#) == 1)
        #expect(sample(during, #"colony_object_items{type="dict"}"#) == 25)
        #expect(sample(during, #"colony_sessions_opened_total{role="client"}"#) == 1)
        _ = try? await dict.get("missing")
        for index in 0..<25 { try await dict.set("k\(index)", index) }
        let after = try await httpRequest(base + "/metrics").body
        #expect(sample(after, setitems) == 50)
        #expect(sample(after, #"colony_request_errors_total{code="KeyError"}"#) == 1)

        let status = try await httpRequest(base + "/api/status")
        #expect(status.status == 200)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any])
        #expect(json["dashboard"] as? String == base + "/")
        let objects = try #require(json["objects"] as? [[String: Any]])
        #expect(objects.contains { $0["name"] as? String == "observed" && $0["size"] as? Int == 25 })

        let page = try await httpRequest(base + "/")
        #expect(page.status == 200)
        #expect(page.body.contains("<title>Colony manager</title>"))
        #expect(page.headers["content-security-policy"]?.contains("default-src 'self'") == true)
        let event = try await httpRequest(base + "/api/events", firstEvent: true)
        #expect(event.headers["content-type"] == "text/event-stream")
        let feed = try #require(event.body.split(separator: "\n").first.map { String($0.dropFirst("data: ".count)) })
        let snapshot = try #require(try JSONSerialization.jsonObject(with: Data(feed.utf8)) as? [String: Any])
        #expect(snapshot["objects_total"] as? Int == 1)

        await client.close()
        #expect(manager.stop() == 0)
    }

    @Test func withTheTokenRequiredOnlyTheRightTokenOverTLSGetsIn() async throws {
        let (manager, httpPort) = try startObservedManager(["--http-require-token"])
        let base = "https://127.0.0.1:\(httpPort)"
        let ca = manager.stateDirectory + "/ca.pem"
        let token = try dashboardURLToken(manager)
        for path in ["/", "/api/status", "/api/events", "/metrics"] {
            #expect(try await httpRequest(base + path, caFile: ca).status == 401, "\(path) without a token")
            #expect(try await httpRequest(base + path + "?token=" + String(repeating: "0", count: 64), caFile: ca).status == 401)
            #expect(try await httpRequest(base + path, caFile: ca, headers: ["Authorization": "Bearer wrong"]).status == 401)
        }
        let metrics = try await httpRequest(base + "/metrics", caFile: ca, headers: ["Authorization": "Bearer \(token)"])
        #expect(metrics.status == 200)
        #expect(metrics.body.contains("colony_uptime_seconds"))
        // The URL `colony status --dashboard-url` prints opens the page and leaves the token
        // as a cookie for the page's own requests.
        let page = try await httpRequest(base + "/?token=" + token, caFile: ca)
        #expect(page.status == 200)
        let cookie = try #require(page.headers["set-cookie"])
        #expect(cookie.contains("colony_token=\(token)") && cookie.contains("Secure") && cookie.contains("HttpOnly"))
        let status = try await httpRequest(base + "/api/status", caFile: ca, headers: ["Cookie": "colony_token=\(token)"])
        #expect(status.status == 200)
        #expect(manager.stop() == 0)
    }

    @Test func theCommandLineRefusesADashboardItCannotProtect() throws {
        let colony = buildDirectory.appendingPathComponent("colony")
        for (arguments, complaint) in [
            (["--http-listen", "0.0.0.0:0", "--insecure-plaintext"], "needs TLS"),
            (["--http-listen", "127.0.0.1"], "HOST:PORT"),
            (["--metrics-public"], "go with --http-listen"),
        ] {
            let process = Process()
            process.executableURL = colony
            process.arguments = ["manager", "--port", "0", "--state-dir", NSTemporaryDirectory() + "colony-test-\(UUID().uuidString)"] + arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus != 0, "\(arguments)")
            #expect(text.contains(complaint), "\(arguments): \(text)")
        }
    }

    /// The token in the URL that `colony status --dashboard-url` prints for `manager`.
    func dashboardURLToken(_ manager: ManagerProcess) throws -> String {
        let process = Process()
        process.executableURL = buildDirectory.appendingPathComponent("colony")
        process.arguments = ["status", "--port", "\(manager.port)", "--state-dir", manager.stateDirectory, "--dashboard-url"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).components(separatedBy: "/?token=")
        try #require(parts.count == 2, "no token in '\(text)'")
        #expect(parts[0].hasPrefix("https://127.0.0.1:"))
        return parts[1]
    }
}
