/// The eventual result of a call submitted to an executor (Python `concurrent.futures.Future`).
///
/// Futures compare equal only to themselves, so they can be kept in sets, as `wait` does.
public final class Future<Value: Sendable>: @unchecked Sendable, Hashable, CustomStringConvertible {
    @usableFromInline
    enum State {
        case pending
        case running
        /// Python's CANCELLED, and CANCELLED_AND_NOTIFIED once an executor has seen it
        /// (`setRunningOrNotifyCancel`): only then do `wait` and `asCompleted` count it done.
        case cancelled(notified: Bool)
        case finished(Result<Value, any Error>)
    }

    @usableFromInline let lock = Lock()
    @usableFromInline var waiters = WaiterQueue()
    // Guarded by lock.
    @usableFromInline var state = State.pending
    @usableFromInline var callbacks: [@Sendable (Future<Value>) -> Void] = []
    /// Those of `wait` and `asCompleted`: called when the future finishes or its
    /// cancellation is acknowledged by an executor.
    @usableFromInline var settledCallbacks: [@Sendable (Future<Value>) -> Void] = []

    /// A pending future. Executors create these; user code normally gets them from `submit`.
    @inlinable
    public init() {}

    /// Python `f.cancel()`: cancels the call unless it is already running or finished.
    /// Returns true when the future is (now) cancelled.
    @discardableResult
    public func cancel() -> Bool {
        let toRun: [@Sendable (Future<Value>) -> Void]? = lock.withLock {
            switch state {
            case .running, .finished: return nil
            case .cancelled: return []
            case .pending:
                state = .cancelled(notified: false)
                return complete(settled: false)
            }
        }
        guard let toRun else { return false }
        for callback in toRun { callback(self) }
        return true
    }

    /// Python `f.cancelled()`.
    public var isCancelled: Bool { lock.withLock { if case .cancelled = state { true } else { false } } }

    /// Python `f.running()`.
    public var isRunning: Bool { lock.withLock { if case .running = state { true } else { false } } }

    /// Python `f.done()`: finished, failed or cancelled.
    public var isDone: Bool { lock.withLock { isDoneLocked } }

    @inlinable
    var isDoneLocked: Bool {
        switch state {
        case .pending, .running: false
        case .cancelled, .finished: true
        }
    }

    /// Python `f.result(timeout=None)`: waits for the call and returns its value or rethrows
    /// its error. Throws `TimeoutError` when `timeout` seconds pass first, `CancelledError`
    /// when the future was cancelled.
    @inlinable
    public func result(timeout: Double? = nil) throws -> Value {
        try waitForOutcome(timeout).get()
    }

    /// Python `f.exception(timeout=None)`: waits for the call and returns the error it threw,
    /// or nil when it succeeded. Throws `TimeoutError` and `CancelledError` like `result`.
    public func exception(timeout: Double? = nil) throws -> (any Error)? {
        if case .failure(let error) = try waitForOutcome(timeout) { return error }
        return nil
    }

    /// Awaits the result without blocking a thread (Python's `await asyncio.wrap_future(f)`).
    public var value: Value {
        get async throws {
            let outcome: Result<Value, any Error> = await withCheckedContinuation { continuation in
                addDoneCallback { future in continuation.resume(returning: future.outcomeOfDone()) }
            }
            return try outcome.get()
        }
    }

    /// Python `f.add_done_callback(fn)`: calls `callback` with this future once it is done
    /// (at once, on this thread, if it already is; otherwise on the completing thread).
    public func addDoneCallback(_ callback: @escaping @Sendable (Future<Value>) -> Void) {
        let runNow: Bool = lock.withLock {
            if isDoneLocked { return true }
            callbacks.append(callback)
            return false
        }
        if runNow { callback(self) }
    }

    // MARK: For executors (Python's "for use by Executor implementations")

    /// Python `f.set_running_or_notify_cancel()`: an executor calls this just before running
    /// the call. Returns true when the future is now running and can no longer be cancelled;
    /// false when it was cancelled (do not run it): the cancellation now counts for `wait`
    /// and `asCompleted`. Any other state (a second call, a finished future) throws
    /// `ThreadingError.invalidFutureState`, Python's RuntimeError.
    @inlinable
    public func setRunningOrNotifyCancel() throws(ThreadingError) -> Bool {
        let settled: [@Sendable (Future<Value>) -> Void]? = try lock.withLock { () throws(ThreadingError) in
            switch state {
            case .pending:
                state = .running
                return nil
            case .cancelled(notified: false):
                state = .cancelled(notified: true)
                defer { settledCallbacks = [] }
                return settledCallbacks
            case .cancelled(notified: true), .running, .finished:
                throw ThreadingError(.invalidFutureState, "set_running_or_notify_cancel() of a future that is \(stateName); an executor calls it once, before running the call")
            }
        }
        guard let settled else { return true }
        for callback in settled { callback(self) }
        return false
    }

    @usableFromInline
    var stateName: String {
        switch state {
        case .pending: "pending"
        case .running: "running"
        case .cancelled(let notified): notified ? "cancelled and notified" : "cancelled"
        case .finished: "finished"
        }
    }

    /// Python `f.set_result(value)`. Throws `ThreadingError.invalidFutureState` when the
    /// future is already done.
    @inlinable
    public func setResult(_ value: Value) throws { try finish(.success(value)) }

    /// Python `f.set_exception(error)`. Throws `ThreadingError.invalidFutureState` when the
    /// future is already done.
    @inlinable
    public func setException(_ error: any Error) throws { try finish(.failure(error)) }

    @inlinable
    func finish(_ result: Result<Value, any Error>) throws {
        let toRun = try lock.withLock {
            if isDoneLocked {
                throw ThreadingError(.invalidFutureState, "the future is already done; it can be completed only once")
            }
            state = .finished(result)
            return complete(settled: true)
        }
        for callback in toRun { callback(self) }
    }

    // With lock held: wakes waiters and hands back the callbacks to run outside the lock.
    @inlinable
    func complete(settled: Bool) -> [@Sendable (Future<Value>) -> Void] {
        waiters.broadcast()
        var toRun = callbacks
        callbacks = []
        if settled {
            toRun += settledCallbacks
            settledCallbacks = []
        }
        return toRun
    }

    /// For `wait` and `asCompleted`: calls `callback` once the future has finished or its
    /// cancellation was acknowledged (at once if it already has).
    func whenSettled(_ callback: @escaping @Sendable (Future<Value>) -> Void) {
        let runNow: Bool = lock.withLock {
            switch state {
            case .finished, .cancelled(notified: true): return true
            case .pending, .running, .cancelled(notified: false):
                settledCallbacks.append(callback)
                return false
            }
        }
        if runNow { callback(self) }
    }

    /// Finished, or cancelled and acknowledged (Python's `f._state in [CANCELLED_AND_NOTIFIED, FINISHED]`).
    var isSettled: Bool {
        lock.withLock {
            switch state {
            case .finished, .cancelled(notified: true): true
            case .pending, .running, .cancelled(notified: false): false
            }
        }
    }

    @inlinable
    func waitForOutcome(_ timeout: Double?) throws -> Result<Value, any Error> {
        try lock.withLock {
            if !isDoneLocked { try waitUntilDoneLocked(Deadline(timeout: timeout)) }
            if case .cancelled = state { throw CancelledError() }
            return outcomeLocked()
        }
    }

    // With lock held; the slow path of waitForOutcome.
    @usableFromInline
    func waitUntilDoneLocked(_ deadline: Deadline) throws {
        while !isDoneLocked {
            if deadline.hasPassed { throw TimeoutError() }
            let waiter = Waiter()
            waiters.append(waiter)
            _ = waiter.block(releasing: lock, until: deadline) { waiters.remove(waiter) }
        }
    }

    private func outcomeOfDone() -> Result<Value, any Error> { lock.withLock { outcomeLocked() } }

    @inlinable
    func outcomeLocked() -> Result<Value, any Error> {
        switch state {
        case .finished(let result): result
        case .cancelled: .failure(CancelledError())
        case .pending, .running: .failure(TimeoutError())
        }
    }

    public static func == (lhs: Future, rhs: Future) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    public var description: String {
        lock.withLock {
            switch state {
            case .pending: "<Future pending>"
            case .running: "<Future running>"
            case .cancelled: "<Future cancelled>"
            case .finished(.success(let value)): "<Future finished returned \(value)>"
            case .finished(.failure(let error)): "<Future finished raised \(error)>"
            }
        }
    }
}

/// When `wait(_:timeout:returnWhen:)` returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
public enum ReturnWhen: Sendable {
    case firstCompleted
    case firstException
    case allCompleted
}

/// What `wait` returns: the futures that are done and those that are not
/// (Python's `DoneAndNotDoneFutures` named tuple).
public struct DoneAndNotDone<Value: Sendable>: Sendable {
    public let done: Set<Future<Value>>
    public let notDone: Set<Future<Value>>
}

/// Python `concurrent.futures.wait(fs, timeout=None, return_when=ALL_COMPLETED)`: waits until
/// `returnWhen` holds or `timeout` seconds pass, and returns which futures are done.
public func wait<Value>(
    _ futures: some Sequence<Future<Value>>, timeout: Double? = nil, returnWhen: ReturnWhen = .allCompleted
) -> DoneAndNotDone<Value> {
    let all = Set(futures)
    let deadline = Deadline(timeout: timeout)
    let completions = SimpleQueue<Future<Value>>()
    for future in all { future.whenSettled { completions.put($0) } }

    var done = Set<Future<Value>>()
    func satisfied() -> Bool {
        switch returnWhen {
        case .allCompleted: return done.count == all.count
        case .firstCompleted: return !done.isEmpty || all.isEmpty
        case .firstException:
            return done.count == all.count || done.contains { !$0.isCancelled && (try? $0.exception(timeout: 0)) != nil }
        }
    }
    while !satisfied() {
        guard let next = try? completions.get(timeout: deadline.remainingSeconds) else { break }
        done.insert(next)
    }
    // Anything that finished meanwhile counts as done too, as in Python.
    done.formUnion(all.filter(\.isSettled))
    return DoneAndNotDone(done: done, notDone: all.subtracting(done))
}

/// Python `concurrent.futures.as_completed(fs, timeout=None)`: hands out the futures as they
/// complete (each once, even if listed twice; a cancelled one once its executor has seen the
/// cancellation). `timeout` counts from this call; once it passes, `next()` throws
/// `TimeoutError` saying how many were unfinished ("2 (of 4) futures unfinished").
///
///     var completed = asCompleted(futures)
///     while let future = try completed.next() { print(try future.result()) }
public func asCompleted<Value>(_ futures: some Sequence<Future<Value>>, timeout: Double? = nil) -> AsCompleted<Value> {
    AsCompleted(Set(futures), deadline: Deadline(timeout: timeout))
}

/// The iterator `asCompleted` returns.
public struct AsCompleted<Value: Sendable> {
    private let completions = SimpleQueue<Future<Value>>()
    private var remaining: Int
    private let total: Int
    private let deadline: Deadline

    init(_ futures: Set<Future<Value>>, deadline: Deadline) {
        remaining = futures.count
        total = futures.count
        self.deadline = deadline
        let completions = self.completions
        for future in futures { future.whenSettled { completions.put($0) } }
    }

    /// The next future to complete, or nil when all have been handed out.
    public mutating func next() throws -> Future<Value>? {
        guard remaining > 0 else { return nil }
        do {
            let future = try completions.get(timeout: deadline.remainingSeconds)
            remaining -= 1
            return future
        } catch is QueueEmpty {
            throw TimeoutError("\(remaining) (of \(total)) futures unfinished")
        }
    }
}
