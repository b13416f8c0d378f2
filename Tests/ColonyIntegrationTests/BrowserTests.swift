import Colony
import Foundation
import Testing

/// Whether headless Chromium, its driver and Selenium are here. `.ci/run` installs them and
/// sets COLONY_BROWSER_TEST=required, so that there a missing browser fails instead of skipping.
let browserAvailable: Bool = {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver")
    else { return false }
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import selenium"]
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}()

let browserRequired = ProcessInfo.processInfo.environment["COLONY_BROWSER_TEST"] == "required"

/// The source tree's `Tests/Browser` directory.
let browserScripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Browser")

@Suite(.serialized) struct BrowserTests {
    @Test(.enabled(if: browserAvailable || browserRequired, "needs chromium, chromium-driver and selenium (.ci/run installs them)"))
    func theDashboardShowsObjectsAndAMapsProgressLiveInARealBrowser() async throws {
        try #require(browserAvailable, "COLONY_BROWSER_TEST=required, but chromium, chromium-driver or selenium is missing")
        let (manager, httpPort) = try startObservedManager()
        let worker = try WorkerProcess(manager: manager, arguments: ["--threads", "2", "--node", "browser-node"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let dict = try await client.dict("seen-in-the-browser", String.self, Int.self)
        try await dict.set("answer", 42)
        // About 20 s of calls, one per chunk: progress the page must show moving.
        let running = try await pool.mapAsync(sleepTask, Array(repeating: 0.1, count: 400), chunksize: 1)

        let screenshots = NSTemporaryDirectory() + "colony-dashboard-screenshots"
        try FileManager.default.createDirectory(atPath: screenshots, withIntermediateDirectories: true)
        let screenshot = screenshots + "/dashboard-\(UUID().uuidString).png"
        let browser = Process()
        browser.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        browser.arguments = [
            "python3", browserScripts.appendingPathComponent("dashboard_check.py").path, "http://127.0.0.1:\(httpPort)/", screenshot,
            "seen-in-the-browser",
        ]
        let output = Pipe()
        browser.standardOutput = output
        browser.standardError = output
        try browser.run()
        let watchdog = Task {
            try await Task.sleep(for: .seconds(150))
            if browser.isRunning { browser.terminate() }
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        browser.waitUntilExit()
        watchdog.cancel()
        #expect(browser.terminationStatus == 0, "the browser check failed: \(text)")
        #expect(FileManager.default.fileExists(atPath: screenshot))
        print("dashboard screenshot: \(screenshot)")

        try await pool.terminate()
        _ = await running.wait(timeout: 10)
        await client.close()
        worker.stop()
        #expect(manager.stop() == 0)
    }
}
