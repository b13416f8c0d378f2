import Atomics
import CMemoryMapShim
import ColonyWire
import Foundation
import Glibc
import MemoryMap
import Threading

/// A child process running one of this program's registered entry points (Python
/// `multiprocessing.Process`). Swift cannot send a closure to another process, so a target
/// is a name registered at the start of `main`, and its arguments are any `Codable` value —
/// shared memory objects, queues and manager proxies included:
///
///     @main enum App {
///         static func main() throws {
///             ChildProcess.register("square") { (n: Int) in print(n * n) }
///             try ChildProcess.bootstrap()   // in a child: runs its target and exits here
///             let child = ChildProcess(target: "square", arguments: 7)
///             try child.start()
///             try child.join()
///         }
///     }
///
/// `bootstrap()` plays the part of Python's `if __name__ == "__main__":` guard: a child is
/// this same executable started again, and everything before `bootstrap()` runs in it too,
/// so register entry points there and do the program's own work after it.
public final class ChildProcess: @unchecked Sendable {
    /// Python `p.name`.
    public let name: String
    /// The entry point the child runs.
    public let target: String
    private let arguments: WireValue
    private let lock = Threading.Lock()
    // Guarded by lock.
    private var daemonFlag: Bool
    private var key: [UInt8]
    private var processID: pid_t?
    private var status: Int32?
    private var pidDescriptor: Int32 = -1
    private var isClosed = false

    /// Python `Process(target=, args=, name=, daemon=)` with `arguments` as the target's input.
    public init<Arguments: Encodable>(target: String, arguments: Arguments, name: String? = nil, daemon: Bool = false) throws {
        self.target = target
        // Proxies among the arguments carry their manager's address, to connect from the child.
        self.arguments = try WireValueEncoder(userInfo: [.colonyProcessTransfer: true]).encode(arguments)
        self.name = name ?? ChildProcess.nextName()
        daemonFlag = daemon
        key = CurrentProcess.authKey
    }

    /// A process whose target takes no arguments.
    public convenience init(target: String, name: String? = nil, daemon: Bool = false) {
        // An empty array always encodes.
        try! self.init(target: target, arguments: [Int](), name: name, daemon: daemon)
    }

    deinit {
        if pidDescriptor >= 0 { Glibc.close(pidDescriptor) }
    }

    // MARK: Entry points

    private static let registryLock = Threading.Lock()
    nonisolated(unsafe) private static var entryPoints: [String: (WireValue) throws -> Void] = [:]

    /// Registers `body` as the entry point `name`, taking a `Codable` argument. Do it at the
    /// start of `main`, before `bootstrap()`, in every run of the program.
    public static func register<Arguments: Decodable>(_ name: String, _ body: @escaping (Arguments) throws -> Void) {
        registryLock.withLock {
            entryPoints[name] = { value in try body(try WireValueDecoder().decode(Arguments.self, from: value)) }
        }
    }

    /// Registers an entry point without arguments.
    public static func register(_ name: String, _ body: @escaping () throws -> Void) {
        registryLock.withLock { entryPoints[name] = { _ in try body() } }
    }

    /// Call early in `main`, after registering entry points. In a child process it runs the
    /// child's target and exits (status 0, or 1 with the error on stderr if it threw); in
    /// the original program it returns at once.
    public static func bootstrap() throws {
        guard let descriptor = ProcessInfo.processInfo.environment[Environment.payload].flatMap(Int32.init) else { return }
        unsetenv(Environment.payload)  // programs this child runs are not Colony children
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.read(descriptor, &chunk, chunk.count)
            if count > 0 { bytes += chunk[..<count] } else if count == 0 || errno != EINTR { break }
        }
        Glibc.close(descriptor)
        let payload = try WireValueDecoder().decode(ChildPayload.self, from: try WireValue(messagePack: bytes))
        CurrentProcess.adopt(payload)
        if payload.dieWithParent {
            _ = colony_set_parent_death_signal(SIGKILL)
            if getppid() != payload.parent { Glibc.exit(1) }  // the parent is already gone
        }
        let entry = registryLock.withLock { entryPoints[payload.target] }
        guard let entry else {
            FileHandle.standardError.write(Data("colony child '\(payload.name)': no entry point named '\(payload.target)' is registered before ChildProcess.bootstrap()\n".utf8))
            Glibc.exit(1)
        }
        do {
            try entry(payload.arguments)
        } catch {
            FileHandle.standardError.write(Data("colony child '\(payload.name)' (\(payload.target)) failed: \(error)\n".utf8))
            ChildProcess.finishChildren()
            Glibc.exit(1)
        }
        ChildProcess.finishChildren()
        Glibc.exit(0)
    }

    enum Environment {
        static let payload = "COLONY_CHILD_PAYLOAD_FD"
    }

    struct ChildPayload: Codable {
        var target: String
        var arguments: WireValue
        var name: String
        var daemon: Bool
        var authKey: [UInt8]
        var parent: Int32
        var dieWithParent: Bool
    }

    // MARK: Properties

    /// Python `p.daemon`: a daemonic child is terminated when this process exits (and, when
    /// started from the main thread, killed if this process dies). Set before `start()`.
    public var daemon: Bool {
        get { lock.withLock { daemonFlag } }
        set { lock.withLock { if processID == nil { daemonFlag = newValue } } }
    }

    /// Python `p.authkey`: inherited from this process unless set before `start()`.
    public var authKey: [UInt8] {
        get { lock.withLock { key } }
        set { lock.withLock { if processID == nil { key = newValue } } }
    }

    /// Python `p.pid`: nil before `start()`.
    public var pid: Int32? { lock.withLock { processID } }

    /// Python `p.exitcode`: nil while running; the exit status, or minus the signal number
    /// that killed it.
    public var exitCode: Int32? {
        reap(block: false)
        return lock.withLock { status }
    }

    /// Python `p.is_alive()`.
    public var isAlive: Bool {
        reap(block: false)
        return lock.withLock { processID != nil && status == nil }
    }

    /// Python `p.sentinel`: a descriptor that becomes readable when the child ends (a pidfd),
    /// for `poll` or `ChildProcess.wait(for:)`. -1 before `start()`.
    public var sentinel: Int32 { lock.withLock { pidDescriptor } }

    // MARK: Life cycle

    /// Python `p.run()`: runs the target here, in this process, as `start()` would in the child.
    public func run() throws {
        guard let entry = ChildProcess.registryLock.withLock({ ChildProcess.entryPoints[target] }) else {
            throw MemoryMapError(.unknownEntryPoint, "no entry point named '\(target)' is registered; call ChildProcess.register first")
        }
        try entry(arguments)
    }

    /// Python `p.start()`: re-executes this program as the child.
    public func start() throws { try start(passing: []) }

    /// The number the first descriptor given to `start(passing:)` has in the child; the
    /// others follow it.
    package static let firstPassedDescriptor: Int32 = 4

    /// `start()`, with `descriptors` open in the child as `firstPassedDescriptor` and on (and
    /// in no other child): a worker node's pipes to its worker process. The caller still owns
    /// them here.
    package func start(passing descriptors: [Int32]) throws {
        try lock.withLock { () throws in
            guard !isClosed else { throw MemoryMapError(.closed, "the process object is closed") }
            guard processID == nil else { throw MemoryMapError(.alreadyStarted, "cannot start a process twice") }
            let payload = ChildPayload(
                target: target, arguments: arguments, name: name, daemon: daemonFlag, authKey: key, parent: getpid(),
                dieWithParent: daemonFlag && Threading.Thread.current === Threading.Thread.main)
            let bytes = Array(try WireValueEncoder().encode(payload).encoded().readableBytesView)
            let child = try ChildProcess.spawn(payload: bytes, passing: descriptors)
            processID = child
            pidDescriptor = colony_pidfd_open(child)
        }
        ChildProcess.track(self)
    }

    private static func spawn(payload: [UInt8], passing passed: [Int32]) throws -> pid_t {
        // A socket pair rather than a pipe: `send` with MSG_NOSIGNAL reports a child that died
        // before reading its payload as EPIPE instead of killing this process with SIGPIPE.
        var payloadEnds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &payloadEnds) == 0 else {
            throw MemoryMapError.system("socketpair")
        }
        let childDescriptor: Int32 = 3
        if payloadEnds[0] == childDescriptor {  // dup2 onto itself would keep close-on-exec
            let moved = fcntl(payloadEnds[0], F_DUPFD_CLOEXEC, 10)
            Glibc.close(payloadEnds[0])
            payloadEnds[0] = moved
        }
        defer { Glibc.close(payloadEnds[1]) }
        // A passed descriptor below 10 could be one an earlier dup2 overwrites, or already the
        // number it gets (dup2 onto itself keeps close-on-exec): a copy above them goes.
        var copies: [Int32] = []
        defer { for copy in copies { Glibc.close(copy) } }
        var sources: [Int32] = []
        for descriptor in passed {
            guard descriptor < 10 else {
                sources.append(descriptor)
                continue
            }
            let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 10)
            guard copy >= 0 else {
                Glibc.close(payloadEnds[0])
                throw MemoryMapError.system("fcntl(F_DUPFD_CLOEXEC)")
            }
            copies.append(copy)
            sources.append(copy)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, payloadEnds[0], childDescriptor)
        for (offset, source) in sources.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, source, firstPassedDescriptor + Int32(offset))
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A clean signal state: threads of this process may block or ignore signals the
        // child must see (SIGTERM for terminate()).
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let executable = "/proc/self/exe"
        var environment = ProcessInfo.processInfo.environment
        environment[Environment.payload] = String(childDescriptor)
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(CommandLine.arguments.first ?? executable), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        Glibc.close(payloadEnds[0])
        guard rc == 0 else { throw MemoryMapError(.system, "posix_spawn failed (errno \(rc))", errno: rc) }
        sendPayload(payload, to: payloadEnds[1])
        return child
    }

    /// Writes a child's payload. A child that exits before reading it all (killed at once,
    /// say) leaves the rest unsent: its exit status tells the story, and this process lives.
    static func sendPayload(_ payload: [UInt8], to descriptor: Int32) {
        var written = 0
        while written < payload.count {
            let count = payload[written...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 { written += count } else if errno != EINTR { return }
        }
    }

    /// Collects the child's status if it has ended (or waits for it with `block`).
    private func reap(block: Bool) {
        lock.withLock {
            guard let processID, status == nil else { return }
            var raw: Int32 = 0
            var result: pid_t
            repeat { result = waitpid(processID, &raw, block ? 0 : WNOHANG) } while result < 0 && errno == EINTR
            guard result == processID else { return }
            // WIFEXITED / WTERMSIG by hand: Swift does not import the macros.
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : -signal
        }
    }

    /// Python `p.join(timeout)`: waits for the child to end (or the timeout to pass).
    public func join(timeout: Double? = nil) throws {
        guard pid != nil else { throw MemoryMapError(.notStarted, "can only join a started process") }
        if let timeout {
            _ = ChildProcess.wait(for: [self], timeout: timeout)
            reap(block: false)
        } else {
            reap(block: true)
        }
    }

    /// Python `p.terminate()`: SIGTERM.
    public func terminate() throws { try send(SIGTERM) }

    /// Python `p.kill()`: SIGKILL.
    public func kill() throws { try send(SIGKILL) }

    private func send(_ signal: Int32) throws {
        try lock.withLock { () throws in
            guard let processID else { throw MemoryMapError(.notStarted, "the process has not been started") }
            if status == nil { Glibc.kill(processID, signal) }
        }
    }

    /// Python `p.close()`: releases the sentinel; an error while the child still runs.
    public func close() throws {
        guard !isAlive else { throw MemoryMapError(.invalidArgument, "cannot close a process while it is still running; join() or terminate() first") }
        lock.withLock {
            if pidDescriptor >= 0 { Glibc.close(pidDescriptor) }
            pidDescriptor = -1
            isClosed = true
        }
    }

    /// Python `multiprocessing.connection.wait(sentinels, timeout)`: the processes among
    /// `processes` that have ended, waiting up to `timeout` for at least one.
    public static func wait(for processes: [ChildProcess], timeout: Double? = nil) -> [ChildProcess] {
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while true {
            let ended = processes.filter { !$0.isAlive }
            if !ended.isEmpty { return ended }
            let remaining = deadline.map { $0.timeIntervalSinceNow } ?? 3600
            if remaining <= 0 { return [] }
            var descriptors = processes.map { pollfd(fd: $0.sentinel, events: Int16(POLLIN), revents: 0) }.filter { $0.fd >= 0 }
            if descriptors.isEmpty {
                usleep(UInt32(min(remaining, 0.01) * 1e6))  // no pidfds: poll the status
            } else {
                _ = poll(&descriptors, nfds_t(descriptors.count), Int32(min(remaining, 3600) * 1000) + 1)
            }
        }
    }

    // MARK: Children of this process

    private static let childrenLock = Threading.Lock()
    nonisolated(unsafe) private static var children: [ChildProcess] = []
    nonisolated(unsafe) private static var exitHookInstalled = false
    private static let counter = ManagedAtomic<Int>(0)

    /// Python's names: `Process-N` in the main process, `Process-1:N` in its child Process-1.
    private static func nextName() -> String {
        let number = counter.wrappingIncrementThenLoad(ordering: .relaxed)
        return CurrentProcess.name == "MainProcess" ? "Process-\(number)" : "\(CurrentProcess.name):\(number)"
    }

    private static func track(_ child: ChildProcess) {
        childrenLock.withLock {
            children.append(child)
            if !exitHookInstalled {
                exitHookInstalled = true
                atexit { ChildProcess.finishChildren() }
            }
        }
    }

    /// Python `multiprocessing.active_children()`: started children still running (the
    /// ended ones are reaped as a side effect).
    public static func activeChildren() -> [ChildProcess] {
        childrenLock.withLock {
            children.removeAll { !$0.isAlive }
            return children
        }
    }

    /// At exit, as Python does: terminate daemonic children, then wait for the others.
    static func finishChildren() {
        let running = childrenLock.withLock { children }
        for child in running where child.daemon && child.isAlive { try? child.terminate() }
        for child in running { try? child.join() }
    }
}

/// What Python's `multiprocessing.current_process()` and `parent_process()` report.
public enum CurrentProcess {
    private static let lock = Threading.Lock()
    nonisolated(unsafe) private static var state = (name: "MainProcess", daemon: false, authKey: randomKey(), parent: Int32?.none)

    private static func randomKey() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func adopt(_ payload: ChildProcess.ChildPayload) {
        lock.withLock { state = (payload.name, payload.daemon, payload.authKey, payload.parent) }
    }

    /// Python `current_process().name`: "MainProcess", or the name the parent gave.
    public static var name: String { lock.withLock { state.name } }
    /// Python `current_process().pid`.
    public static var pid: Int32 { getpid() }
    /// Python `current_process().daemon`.
    public static var isDaemon: Bool { lock.withLock { state.daemon } }
    /// Python `current_process().authkey`: random in the main process, inherited by children.
    public static var authKey: [UInt8] {
        get { lock.withLock { state.authKey } }
        set { lock.withLock { state.authKey = newValue } }
    }
    /// Python `parent_process().pid`: nil in the main process.
    public static var parentPID: Int32? { lock.withLock { state.parent } }
}
