@testable import Colony
import Foundation
import Testing

@Suite struct ChildPayloadTests {
    @Test func aChildThatExitsBeforeReadingItsPayloadLeavesTheParentRunning() throws {
        // The child's end of the payload channel is its standard input; it exits without
        // reading. 4 MiB is more than the socket buffers hold, so the send is still under way
        // when the reader is gone: a plain write would raise SIGPIPE and kill this process.
        var ends: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "exit 0"]
        child.standardInput = FileHandle(fileDescriptor: ends[0], closeOnDealloc: true)
        try child.run()
        child.waitUntilExit()
        try (child.standardInput as? FileHandle)?.close()
        // This process may already ignore SIGPIPE (NIO does so once it opens a socket), which
        // would hide a raised one; blocked, it stays pending even when ignored (Linux), so
        // the check below sees whether the send raised it.
        var pipeSignal = sigset_t(), previous = sigset_t(), pending = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        ChildProcess.sendPayload([UInt8](repeating: 7, count: 4 << 20), to: ends[1])
        sigpending(&pending)
        let raised = sigismember(&pending, SIGPIPE) == 1
        if raised {
            var timeout = timespec()
            _ = sigtimedwait(&pipeSignal, nil, &timeout)
        }
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        close(ends[1])
        #expect(!raised, "sending to a child that is gone raised SIGPIPE")
        #expect(child.terminationStatus == 0)
    }
}

@Suite struct ConnectFailureTests {
    @Test func connectingWhereNoManagerListensThrowsInsteadOfCrashing() async throws {
        // A port that was free a moment ago: nothing listens there now.
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        close(socket)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let key = [UInt8](repeating: 1, count: 32)
        // Twice: the first failure used to leave a promise unfulfilled, which NIO traps on.
        for _ in 0..<2 {
            await #expect(throws: ConnectionError.self) { try await Manager.connect(port: port, authKey: key, trust: .insecurePlaintext) }
        }
    }
}
