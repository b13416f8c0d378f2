import Atomics
import CMemoryMapShim
import Glibc

/// What `Thread.excepthook` receives when a thread's `run()` throws
/// (Python `threading.ExceptHookArgs`).
public struct ExceptHookArguments: Sendable {
    /// The error `run()` threw.
    public let error: any Error
    /// The thread it was thrown in.
    public let thread: Thread
}

/// A thread of control (Python `threading.Thread`).
///
/// Either pass a `target` closure, or subclass and override `run()`. Nothing happens until
/// `start()`. A non-daemon thread keeps the process alive at normal exit, as in Python:
/// when `main` returns (or anything calls `exit`), Colony's `atexit` handler joins every
/// non-daemon thread still running before the process ends. Daemon threads are simply
/// stopped with the process. `_exit`, `abort` and fatal signals end the process at once.
///
/// When Foundation is also imported, spell this type `Threading.Thread`.
open class Thread: @unchecked Sendable, CustomStringConvertible {
    /// The largest timeout any wait accepts; larger values wait forever
    /// (Python `threading.TIMEOUT_MAX`).
    public static let timeoutMax: Double = 9_223_372_036

    private let target: (@Sendable () throws -> Void)?
    private let stateLock = Lock()
    // Guarded by stateLock.
    private var storedName: String
    private var storedDaemon: Bool
    private var started = false
    private var storedIdent: UInt?
    private var storedNativeID: Int?

    private let running = Event()
    private let finished = Event()

    /// Python `Thread(name=None, target=None, daemon=None)`. Arguments are captured by the
    /// closure. `daemon: nil` inherits the daemon flag of the creating thread when Colony
    /// started that thread, and is false otherwise (main thread, Swift concurrency's threads).
    public init(name: String? = nil, daemon: Bool? = nil, target: (@Sendable () throws -> Void)? = nil) {
        self.target = target
        // As in Python, an empty name gets the default one too.
        self.storedName = name.flatMap { $0.isEmpty ? nil : $0 } ?? "Thread-\(ThreadRegistry.shared.nextThreadNumber())"
        let creator = Thread.current
        self.storedDaemon = daemon ?? (creator is AdoptedThread ? false : creator.isDaemon)
    }

    /// For the main thread and threads Colony did not start: already running.
    fileprivate init(adopting ident: UInt, nativeID: Int?, name: String, daemon: Bool) {
        self.target = nil
        self.storedName = name
        self.storedDaemon = daemon
        self.started = true
        self.storedIdent = ident
        self.storedNativeID = nativeID
        running.set()
    }

    /// Python `t.run()`: the thread's body. Calls `target` unless overridden.
    /// An error it throws goes to `Thread.excepthook`.
    open func run() throws {
        try target?()
    }

    /// Python `t.start()`: runs `run()` on a new thread. Throws `ThreadingError.alreadyStarted`
    /// on a second call, `.threadCreationFailed` when the system cannot make a thread.
    public func start() throws {
        try stateLock.withLock {
            if started {
                throw ThreadingError(.alreadyStarted, "start() of thread '\(storedName)' that was already started; threads can only be started once")
            }
            started = true
        }
        if !isDaemon { ThreadRegistry.shared.installExitHandler() }

        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let stack = Thread.stackSize()
        if stack > 0 { pthread_attr_setstacksize(&attributes, stack) }

        let context = Unmanaged.passRetained(self).toOpaque()
        var handle = pthread_t()
        let status = pthread_create(&handle, &attributes, { context in
            let thread = Unmanaged<Thread>.fromOpaque(context!).takeRetainedValue()
            thread.bootstrap()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Thread>.fromOpaque(context).release()
            stateLock.withLock { started = false }
            throw ThreadingError(.threadCreationFailed, "can't start new thread '\(name)': pthread_create failed with error \(status)")
        }
        running.wait()
    }

    private func bootstrap() {
        stateLock.withLock {
            storedIdent = currentThreadIdent()
            storedNativeID = Int(colony_gettid())
        }
        ThreadRegistry.shared.register(self)
        ThreadRegistry.shared.setCurrent(self)
        running.set()
        do {
            try run()
        } catch {
            Thread.excepthook(ExceptHookArguments(error: error, thread: self))
        }
        ThreadRegistry.shared.unregister(self)
        finished.set()
    }

    /// Python `t.join(timeout=None)`: waits until the thread ends. Returns true when it has
    /// ended, false when `timeout` seconds passed first (Python returns None; check
    /// `isAlive`). Throws when the thread was never started, is the calling thread, or is
    /// the stand-in for a thread Colony did not start (Python's dummy threads), whose end
    /// nothing reports. The main thread's joiners return once the main program has ended.
    @discardableResult
    public func join(timeout: Double? = nil) throws -> Bool {
        guard stateLock.withLock({ started }) else {
            throw ThreadingError(.notStarted, "join() of thread '\(name)' before start()")
        }
        if self === Thread.current {
            throw ThreadingError(.joinCurrentThread, "thread '\(name)' cannot join itself; that would wait forever")
        }
        if self is AdoptedThread, self !== Thread.main {
            throw ThreadingError(
                .joinDummyThread, "cannot join a dummy thread: '\(name)' was not started by Colony, so nothing reports its end (join a Thread you started)")
        }
        return finished.wait(timeout: timeout)
    }

    /// The main program has ended (the exit handler runs): the main thread's joiners return.
    fileprivate func markMainFinished() { finished.set() }

    /// Python `t.is_alive()`: true from `start()` until `run()` returns.
    public var isAlive: Bool { running.isSet && !finished.isSet }

    /// Python `t.name`: a label for debugging, not necessarily unique.
    public var name: String {
        get { stateLock.withLock { storedName } }
        set { stateLock.withLock { storedName = newValue } }
    }

    /// Python `t.daemon`: whether the process may exit while this thread runs.
    public var isDaemon: Bool { stateLock.withLock { storedDaemon } }

    /// Python `t.daemon = flag`: only before `start()`; afterwards throws
    /// `ThreadingError.daemonOfActiveThread`.
    public func setDaemon(_ daemon: Bool) throws {
        try stateLock.withLock {
            if started {
                throw ThreadingError(.daemonOfActiveThread, "cannot change the daemon flag of thread '\(storedName)' after start()")
            }
            storedDaemon = daemon
        }
    }

    /// Python `t.ident`: the thread's identifier (`pthread_t`), nil before `start()`.
    public var ident: UInt? { stateLock.withLock { storedIdent } }

    /// Python `t.native_id`: the kernel's thread id, nil before `start()`.
    public var nativeID: Int? { stateLock.withLock { storedNativeID } }

    public var description: String {
        let status = isAlive ? "started" : (finished.isSet ? "stopped" : "initial")
        return "<Thread(\(name), \(status)\(isDaemon ? " daemon" : "") \(ident.map(String.init) ?? ""))>"
    }
}

// MARK: - Module functions (Python's threading.* functions)

extension Thread {
    /// Python `threading.current_thread()`. For a thread Colony did not start, returns a
    /// stand-in object (Python's "dummy thread") that lives as long as that thread.
    public static var current: Thread { ThreadRegistry.shared.current() }

    /// Python `threading.main_thread()`.
    public static var main: Thread { ThreadRegistry.shared.mainThread }

    /// Python `threading.active_count()`: how many threads are alive, the main thread included.
    public static func activeCount() -> Int { ThreadRegistry.shared.alive().count }

    /// Python `threading.enumerate()`: every thread that is alive.
    public static func enumerate() -> [Thread] { ThreadRegistry.shared.alive() }

    /// Python `time.sleep(seconds)`: suspends the calling thread. Negative or NaN sleeps not at all.
    public static func sleep(_ seconds: Double) {
        guard seconds > 0 else { return }
        let whole = min(seconds, Thread.timeoutMax)
        var request = timespec(tv_sec: Int(whole), tv_nsec: Int((whole - whole.rounded(.down)) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }

    /// Python `threading.get_ident()`.
    public static var currentIdent: UInt { currentThreadIdent() }

    /// Python `threading.get_native_id()`.
    public static var currentNativeID: Int { Int(colony_gettid()) }

    /// The smallest stack size `setStackSize` accepts, other than 0.
    public static let minimumStackSize = 32_768

    /// Python `threading.stack_size()`: the stack size for new threads; 0 means the system default.
    public static func stackSize() -> Int { stackSizeStorage.load(ordering: .relaxed) }

    /// Python `threading.stack_size(size)`: sets the stack size for threads started from now
    /// on and returns the previous value. 0 restores the system default; other values must be
    /// at least `minimumStackSize` and acceptable to the platform, or this throws
    /// `ThreadingError.invalidStackSize`.
    @discardableResult
    public static func setStackSize(_ size: Int) throws -> Int {
        if size != 0 {
            guard size >= minimumStackSize else {
                throw ThreadingError(.invalidStackSize, "stack size \(size) is too small: use 0 (the system default) or at least \(minimumStackSize) bytes")
            }
            var attributes = pthread_attr_t()
            pthread_attr_init(&attributes)
            defer { pthread_attr_destroy(&attributes) }
            guard pthread_attr_setstacksize(&attributes, size) == 0 else {
                throw ThreadingError(.invalidStackSize, "stack size \(size) is not accepted by this platform")
            }
        }
        return stackSizeStorage.exchange(size, ordering: .relaxed)
    }

    private static let stackSizeStorage = ManagedAtomic<Int>(0)

    /// Python `threading.excepthook`: called with the error when a thread's `run()` throws.
    /// Assign your own to log or collect such errors.
    public static var excepthook: @Sendable (ExceptHookArguments) -> Void {
        get { ThreadRegistry.shared.excepthook() }
        set { ThreadRegistry.shared.setExcepthook(newValue) }
    }

    /// Python `threading.__excepthook__`: the original hook, which prints the error to stderr.
    public static let defaultExcepthook: @Sendable (ExceptHookArguments) -> Void = { arguments in
        let text = "Exception in thread \(arguments.thread.name):\n\(arguments.error)\n"
        var bytes = Array(text.utf8)
        _ = Glibc.write(2, &bytes, bytes.count)
    }
}

private final class AdoptedThread: Thread, @unchecked Sendable {}

/// Every live thread, the calling thread's `Thread` object, and process-wide settings.
final class ThreadRegistry: @unchecked Sendable {
    static let shared = ThreadRegistry()

    let mainThread: Thread
    private let lock = Lock()
    // Guarded by lock.
    private var threads: [ObjectIdentifier: Thread] = [:]
    private var counter = 0
    private var hook: @Sendable (ExceptHookArguments) -> Void = Thread.defaultExcepthook
    private let exitHandlerInstalled = ManagedAtomic<Bool>(false)
    private var currentKey = pthread_key_t()
    private var executors: [ObjectIdentifier: ThreadPoolCore] = [:]

    private init() {
        mainThread = AdoptedThread(
            adopting: colony_main_thread_ident(), nativeID: Int(getpid()), name: "MainThread", daemon: false)
        threads[ObjectIdentifier(mainThread)] = mainThread
        // The key's value is a retained Thread; the destructor gives it back when an OS
        // thread ends, and forgets stand-ins for threads Colony did not start.
        pthread_key_create(&currentKey) { pointer in
            guard let pointer else { return }
            let thread = Unmanaged<Thread>.fromOpaque(pointer).takeRetainedValue()
            if thread is AdoptedThread { ThreadRegistry.shared.unregister(thread) }
        }
    }

    func nextThreadNumber() -> Int {
        lock.withLock {
            counter += 1
            return counter
        }
    }

    func register(_ thread: Thread) { lock.withLock { threads[ObjectIdentifier(thread)] = thread } }

    func unregister(_ thread: Thread) { lock.withLock { threads[ObjectIdentifier(thread)] = nil } }

    func alive() -> [Thread] { lock.withLock { Array(threads.values) } }

    func setCurrent(_ thread: Thread) {
        pthread_setspecific(currentKey, Unmanaged.passRetained(thread).toOpaque())
    }

    func current() -> Thread {
        if let pointer = pthread_getspecific(currentKey) {
            return Unmanaged<Thread>.fromOpaque(pointer).takeUnretainedValue()
        }
        let ident = currentThreadIdent()
        if ident == mainThread.ident { return mainThread }
        let adopted = AdoptedThread(
            adopting: ident, nativeID: Int(colony_gettid()), name: "Dummy-\(nextThreadNumber())", daemon: true)
        register(adopted)
        setCurrent(adopted)
        return adopted
    }

    func excepthook() -> @Sendable (ExceptHookArguments) -> Void { lock.withLock { hook } }

    func setExcepthook(_ newHook: @escaping @Sendable (ExceptHookArguments) -> Void) {
        lock.withLock { hook = newHook }
    }

    /// Executors whose queued calls must finish before the process exits.
    func shutDownAtExit(_ executor: ThreadPoolCore) {
        lock.withLock { executors[ObjectIdentifier(executor)] = executor }
        installExitHandler()
    }

    func forgetAtExit(_ executor: ThreadPoolCore) {
        lock.withLock { executors[ObjectIdentifier(executor)] = nil }
    }

    /// Installs, once, the `atexit` handler that gives Python's exit behaviour: executors
    /// finish their queued calls, then non-daemon threads are joined.
    func installExitHandler() {
        guard exitHandlerInstalled.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
        else { return }
        atexit {
            let registry = ThreadRegistry.shared
            if Thread.current === registry.mainThread { registry.mainThread.markMainFinished() }
            for executor in registry.lock.withLock({ Array(registry.executors.values) }) {
                executor.shutdown(wait: true, cancelFutures: false)
            }
            // Threads may start threads, so repeat until none is left.
            let me = Thread.current
            while true {
                let pending = registry.alive().filter { !($0 is AdoptedThread) && !$0.isDaemon && $0 !== me }
                if pending.isEmpty { return }
                for thread in pending { _ = try? thread.join() }
            }
        }
    }
}
