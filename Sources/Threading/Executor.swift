import Atomics
import Glibc

/// Runs calls asynchronously on a pool of workers (Python `concurrent.futures.Executor`).
/// `ThreadPoolExecutor` runs them on threads; the process pool runs them in other processes.
public protocol Executor: AnyObject, Sendable {
    /// Python `e.submit(fn, *args)`: schedules `call` and returns its future at once.
    /// Arguments are captured by the closure. Throws after `shutdown`.
    func submit<Value: Sendable>(_ call: @escaping @Sendable () throws -> Value) throws -> Future<Value>

    /// Python `e.shutdown(wait=True, cancel_futures=False)`: accepts no more work. With
    /// `cancelFutures`, calls that have not started are cancelled; with `wait`, returns
    /// only once all running calls are done.
    func shutdown(wait: Bool, cancelFutures: Bool)

    /// Python `e.map(fn, *iterables, timeout=None, chunksize=1)`: runs `transform` on every
    /// item and returns the results in input order. `timeout` counts from this call.
    /// `chunksize` groups items per dispatch where that saves work (process pools).
    func map<Input: Sendable, Output: Sendable>(
        _ items: some Sequence<Input>, timeout: Double?, chunksize: Int,
        _ transform: @escaping @Sendable (Input) throws -> Output
    ) throws -> MapResults<Output>
}

extension Executor {
    public func map<Input: Sendable, Output: Sendable>(
        _ items: some Sequence<Input>, timeout: Double? = nil, chunksize: Int = 1,
        _ transform: @escaping @Sendable (Input) throws -> Output
    ) throws -> MapResults<Output> {
        guard chunksize >= 1 else {
            throw ThreadingError(.invalidArgument, "chunksize must be >= 1, got \(chunksize)")
        }
        let deadline = Deadline(timeout: timeout)
        var futures: [Future<Output>] = []
        for item in items { futures.append(try submit { try transform(item) }) }
        return MapResults(futures, deadline: deadline)
    }

    /// Python `e.shutdown()`: waits for running calls, keeps queued ones.
    public func shutdown() { shutdown(wait: true, cancelFutures: false) }

    /// Python `with executor:` — runs `body`, then `shutdown(wait: true)`, even if `body` throws.
    public func using<Result>(_ body: (Self) throws -> Result) rethrows -> Result {
        defer { shutdown() }
        return try body(self)
    }
}

/// The results of `Executor.map`, in input order (Python's result iterator).
///
///     var results = try executor.map(1...10) { $0 * $0 }
///     while let square = try results.next() { print(square) }
public struct MapResults<Value: Sendable> {
    private let futures: [Future<Value>]
    private var position = 0
    private let deadline: Deadline

    init(_ futures: [Future<Value>], deadline: Deadline) {
        self.futures = futures
        self.deadline = deadline
    }

    /// The next result, or nil after the last. Rethrows a call's error, or throws
    /// `TimeoutError` when map's timeout passed; either way the calls not yet started are
    /// cancelled.
    public mutating func next() throws -> Value? {
        guard position < futures.count else { return nil }
        do {
            let value = try futures[position].result(timeout: deadline.remainingSeconds)
            position += 1
            return value
        } catch {
            for future in futures[position...] { future.cancel() }
            position = futures.count
            throw error
        }
    }

    /// Every remaining result, in order (Python `list(e.map(...))`).
    public mutating func collect() throws -> [Value] {
        var values: [Value] = []
        values.reserveCapacity(futures.count - position)
        while let value = try next() { values.append(value) }
        return values
    }
}

/// An executor that runs calls on a pool of threads (Python `ThreadPoolExecutor`).
///
/// Threads start as work arrives, up to `maxWorkers`, and are reused. At normal process exit,
/// executors that were not shut down finish their queued calls first, as in Python.
public final class ThreadPoolExecutor: Executor, @unchecked Sendable {
    /// Python `max_workers`.
    public let maxWorkers: Int
    /// Python `thread_name_prefix`: worker threads are named `<prefix>_<n>`.
    public let threadNamePrefix: String
    @usableFromInline let core: ThreadPoolCore

    /// Python `ThreadPoolExecutor(max_workers=None, thread_name_prefix='', initializer=None)`.
    /// `maxWorkers` defaults to min(32, cores + 4). `initializer` runs at the start of each
    /// worker thread; if it throws, the executor is broken and every pending call fails with
    /// `ThreadingError.brokenExecutor`.
    public init(
        maxWorkers: Int? = nil, threadNamePrefix: String? = nil,
        initializer: (@Sendable () throws -> Void)? = nil
    ) throws {
        let workers = maxWorkers ?? min(32, cpuCount() + 4)
        guard workers >= 1 else {
            throw ThreadingError(.invalidArgument, "maxWorkers must be at least 1, got \(workers)")
        }
        self.maxWorkers = workers
        let prefix = threadNamePrefix ?? "ThreadPoolExecutor-\(ThreadRegistry.shared.nextThreadNumber())"
        self.threadNamePrefix = prefix
        core = ThreadPoolCore(maxWorkers: workers, namePrefix: prefix, initializer: initializer)
        ThreadRegistry.shared.shutDownAtExit(core)
    }

    deinit { core.shutdown(wait: false, cancelFutures: false) }

    @inlinable
    public func submit<Value: Sendable>(_ call: @escaping @Sendable () throws -> Value) throws -> Future<Value> {
        let future = Future<Value>()
        try core.enqueue { action in
            switch action {
            case .run:
                guard (try? future.setRunningOrNotifyCancel()) == true else { return }
                do {
                    try future.setResult(try call())
                } catch {
                    try? future.setException(error)
                }
            case .cancel:
                future.cancel()
            case .fail(let error):
                try? future.setException(error)
            }
        }
        return future
    }

    public func shutdown(wait: Bool, cancelFutures: Bool = false) {
        core.shutdown(wait: wait, cancelFutures: cancelFutures)
    }
}

/// What the pool asks of a queued call: run it, or give it up (cancelled, or failed because
/// the pool broke).
@usableFromInline
enum WorkAction {
    case run
    case cancel
    case fail(any Error)
}

/// One queued call, told what to do by a worker.
@usableFromInline
typealias WorkItem = @Sendable (WorkAction) -> Void

/// What a worker takes from the queue: a call, or the signal to stop.
enum Job: Sendable {
    case call(WorkItem)
    case stop
}

/// The state the worker threads share; kept apart from `ThreadPoolExecutor` so that the
/// executor can be released (and shut down) while its workers still run.
@usableFromInline
final class ThreadPoolCore: @unchecked Sendable {
    private let maxWorkers: Int
    private let namePrefix: String
    private let initializer: (@Sendable () throws -> Void)?
    private let work = Queue<Job>()
    // Workers that finished a call since work last arrived: Python's idle semaphore.
    private let idleWorkers = ManagedAtomic<Int>(0)
    private let lock = Lock()
    // Guarded by lock.
    private var workers: [Thread] = []
    private var stoppedWorkers = 0
    private var isShutDown = false
    private var brokenReason: String?

    init(maxWorkers: Int, namePrefix: String, initializer: (@Sendable () throws -> Void)?) {
        self.maxWorkers = maxWorkers
        self.namePrefix = namePrefix
        self.initializer = initializer
    }

    @usableFromInline
    func enqueue(_ item: @escaping WorkItem) throws {
        try lock.withLock {
            if let brokenReason { throw ThreadingError(.brokenExecutor, brokenReason) }
            if isShutDown {
                throw ThreadingError(.executorShutDown, "cannot submit new work after shutdown()")
            }
            try? work.put(.call(item))
            if !takeIdleWorker(), workers.count < maxWorkers {
                try startWorker()
            }
        }
    }

    private func takeIdleWorker() -> Bool {
        var idle = idleWorkers.load(ordering: .relaxed)
        while idle > 0 {
            let (exchanged, current) = idleWorkers.compareExchange(expected: idle, desired: idle - 1, ordering: .relaxed)
            if exchanged { return true }
            idle = current
        }
        return false
    }

    // With lock held.
    private func startWorker() throws {
        let worker = Thread(name: "\(namePrefix)_\(workers.count)", daemon: true) { [self] in
            workerLoop()
        }
        try worker.start()
        workers.append(worker)
    }

    private func workerLoop() {
        if let initializer {
            do {
                try initializer()
            } catch {
                markBroken("a worker initializer failed: \(error)")
                return
            }
        }
        while case .call(let item)? = try? work.get() {
            item(.run)
            idleWorkers.wrappingIncrement(ordering: .relaxed)
        }
        try? work.put(.stop)  // let the other workers see the end too
        let last = lock.withLock {
            stoppedWorkers += 1
            return isShutDown && stoppedWorkers == workers.count
        }
        if last { ThreadRegistry.shared.forgetAtExit(self) }  // nothing left for exit to wait for
    }

    private func markBroken(_ reason: String) {
        lock.withLock { if brokenReason == nil { brokenReason = reason } }
        let error = ThreadingError(.brokenExecutor, reason)
        while case .call(let item)? = try? work.getNowait() { item(.fail(error)) }
        try? work.put(.stop)
    }

    /// Python's `shutdown`: no new calls; queued ones still run (unless `cancelFutures`), so
    /// with `wait: false` the process exit waits for them, as Python's does.
    func shutdown(wait: Bool, cancelFutures: Bool) {
        let (toJoin, idle): ([Thread], Bool) = lock.withLock {
            if !isShutDown {
                isShutDown = true
                if cancelFutures {
                    while case .call(let item)? = try? work.getNowait() { item(.cancel) }
                }
                try? work.put(.stop)
            }
            return (workers, stoppedWorkers == workers.count)
        }
        if idle { ThreadRegistry.shared.forgetAtExit(self) }
        guard wait else { return }
        let me = Thread.current
        for worker in toJoin where worker !== me { _ = try? worker.join() }
    }
}

/// How many CPU cores this process may use (Python `os.cpu_count()`).
public func cpuCount() -> Int {
    Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}
