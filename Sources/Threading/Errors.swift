/// A misuse of a thread-core object: the errors Python reports as `RuntimeError` or
/// `ValueError` from `threading`, `queue` and `concurrent.futures`.
///
/// Compare `code` against the static codes (`error.code == .releaseUnlocked`); `message`
/// says what went wrong and what to do about it.
public struct ThreadingError: Error, Hashable, CustomStringConvertible {
    /// What kind of misuse happened. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case releaseUnlocked, notOwner, alreadyStarted, notStarted, joinCurrentThread
            case daemonOfActiveThread, invalidStackSize, threadCreationFailed
            case boundedSemaphoreOverReleased, invalidArgument, taskDoneTooManyTimes
            case executorShutDown, brokenExecutor, invalidFutureState, overflow, joinDummyThread
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// `release()` on a lock that is not locked (Python: RuntimeError).
        public static let releaseUnlocked = Code(.releaseUnlocked)
        /// An RLock or Condition used by a thread that does not own its lock (RuntimeError).
        public static let notOwner = Code(.notOwner)
        /// `start()` called a second time (RuntimeError).
        public static let alreadyStarted = Code(.alreadyStarted)
        /// `join()` on a thread that was never started (RuntimeError).
        public static let notStarted = Code(.notStarted)
        /// A thread tried to join itself, which would deadlock (RuntimeError).
        public static let joinCurrentThread = Code(.joinCurrentThread)
        /// `join()` on the stand-in for a thread Colony did not start (RuntimeError
        /// "cannot join a dummy thread").
        public static let joinDummyThread = Code(.joinDummyThread)
        /// `setDaemon` after `start()` (RuntimeError).
        public static let daemonOfActiveThread = Code(.daemonOfActiveThread)
        /// `Thread.setStackSize` with a size the platform does not accept (ValueError).
        public static let invalidStackSize = Code(.invalidStackSize)
        /// The operating system refused to create a thread (RuntimeError "can't start new thread").
        public static let threadCreationFailed = Code(.threadCreationFailed)
        /// A BoundedSemaphore released above its initial value (ValueError).
        public static let boundedSemaphoreOverReleased = Code(.boundedSemaphoreOverReleased)
        /// An argument outside its allowed range, such as a zero-party Barrier (ValueError).
        public static let invalidArgument = Code(.invalidArgument)
        /// `taskDone()` called more times than items were put (ValueError).
        public static let taskDoneTooManyTimes = Code(.taskDoneTooManyTimes)
        /// `submit` or `map` after `shutdown` (RuntimeError).
        public static let executorShutDown = Code(.executorShutDown)
        /// A worker's initializer failed, so the executor can run nothing (BrokenThreadPool).
        public static let brokenExecutor = Code(.brokenExecutor)
        /// A Future was completed twice (InvalidStateError).
        public static let invalidFutureState = Code(.invalidFutureState)
        /// A number too large for what it sizes, such as a timeout above
        /// `Thread.timeoutMax` (OverflowError).
        public static let overflow = Code(.overflow)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// Raised by `Barrier.wait` when the barrier is broken or reset while waiting, or was
/// broken before the call (Python: `threading.BrokenBarrierError`).
public struct BrokenBarrierError: Error, Hashable, CustomStringConvertible {
    /// Why, when the barrier knows (a manager's barrier says whose action failed or vanished).
    public let reason: String

    public init(_ reason: String = "the barrier is broken (aborted, reset, timed out or its action failed); call reset() to reuse it") {
        self.reason = reason
    }
    public var description: String { reason }
}

/// Raised by a non-blocking or timed `get` on an empty queue (Python: `queue.Empty`).
public struct QueueEmpty: Error, Hashable, CustomStringConvertible {
    public init() {}
    public var description: String { "the queue is empty" }
}

/// Raised by a non-blocking or timed `put` on a full queue (Python: `queue.Full`).
public struct QueueFull: Error, Hashable, CustomStringConvertible {
    public init() {}
    public var description: String { "the queue is full" }
}

/// Raised by `put` after `shutdown`, and by `get` once a shut-down queue is empty
/// (Python 3.13: `queue.ShutDown`).
public struct QueueShutDown: Error, Hashable, CustomStringConvertible {
    public init() {}
    public var description: String { "the queue was shut down" }
}

/// A wait with a timeout ran out before its result was ready
/// (Python: `concurrent.futures.TimeoutError`, `multiprocessing.TimeoutError`).
public struct TimeoutError: Error, Hashable, CustomStringConvertible {
    /// What timed out, as Python words it.
    public let message: String

    public init(_ message: String = "timed out before the result was ready") { self.message = message }
    public var description: String { message }
}

/// The result of a cancelled future was asked for (Python: `concurrent.futures.CancelledError`).
public struct CancelledError: Error, Hashable, CustomStringConvertible {
    public init() {}
    public var description: String { "the future was cancelled" }
}
