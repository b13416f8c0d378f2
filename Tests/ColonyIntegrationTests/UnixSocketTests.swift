import Colony
import Foundation
import Testing

/// `colony manager --unix PATH`: same-host clients and worker nodes reach the manager over a
/// Unix domain socket, with the authkey handshake and no TLS (SPEC 1).
@Suite(.serialized) struct UnixSocketTests {
    @Test func clientsAndWorkerNodesConnectOverTheSocketWithTheAuthkey() async throws {
        let directory = NSTemporaryDirectory() + "colony-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/manager.sock"
        let server = try ManagerProcess(extraArguments: ["--unix", path], stateDirectory: directory)
        defer { server.stop() }

        let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        #expect(mode == 0o600, "only the manager's user may connect")

        let local = try await Manager.connect(unixSocket: path, stateDirectory: directory)
        let shared = try await local.dict("over-unix", String.self, Int.self)
        try await shared.set("a", 1)
        // The same object over TCP and TLS.
        let remote = try await server.connect()
        #expect(try await remote.dict("over-unix", String.self, Int.self).get("a") == 1)

        await #expect(throws: AuthenticationError.self) {
            _ = try await Manager.connect(unixSocket: path, authKey: Array(repeating: 9, count: 32))
        }

        // A worker node over the socket runs a map.
        let worker = try WorkerProcess(manager: server, arguments: ["--threads", "1", "--pool", "unix-pool"], connect: "unix:" + path)
        defer { worker.stop() }
        let pool = try await local.pool("unix-pool")
        try await waitForWorkers(pool, 1)
        #expect(try await pool.map(PoolTask<Int, Int>("echo"), 1...5) == [1, 2, 3, 4, 5])

        await local.close()
        await remote.close()
    }
}
