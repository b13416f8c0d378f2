/// A thread-safe FIFO queue (Python `queue.Queue`); `LifoQueue` and `PriorityQueue` are the
/// same queue with another order. Every method is atomic.
///
/// Timeouts are seconds: `nil` waits as long as needed; a negative timeout throws
/// `ThreadingError.invalidArgument`, as Python's `ValueError`.
public class Queue<Element>: @unchecked Sendable {
    @usableFromInline
    struct State {
        @usableFromInline var items: QueueStorage<Element>
        @usableFromInline var unfinishedTasks = 0
        @usableFromInline var isShutDown = false

        @usableFromInline init(items: QueueStorage<Element>) { self.items = items }
    }

    /// Python `maxsize`: the queue is full at this many items; 0 or less means unbounded.
    public let maxsize: Int
    @usableFromInline let lock = Lock()
    @usableFromInline let notEmpty = WaitList()
    @usableFromInline let notFull = WaitList()
    @usableFromInline let allTasksDone = WaitList()
    // Stable storage, touched only with `lock` held.
    @usableFromInline let state: UnsafeMutablePointer<State>

    /// Python `Queue(maxsize=0)`.
    public convenience init(maxsize: Int = 0) {
        self.init(maxsize: maxsize, order: .fifo)
    }

    init(maxsize: Int, order: QueueStorage<Element>.Order) {
        self.maxsize = maxsize
        state = .allocate(capacity: 1)
        state.initialize(to: State(items: QueueStorage(order: order)))
    }

    deinit {
        state.pointee.items.destroy()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Python `q.qsize()`: how many items are in the queue right now (advisory).
    public final var qsize: Int { lock.withLock { state.pointee.items.count } }

    /// Python `q.empty()` (advisory).
    public final var isEmpty: Bool { qsize == 0 }

    /// Python `q.full()` (advisory).
    public final var isFull: Bool { maxsize > 0 && qsize >= maxsize }

    /// Python `q.put(item, block=True, timeout=None)`. Waits while the queue is full when
    /// `block` (for at most `timeout` seconds), then throws `QueueFull`; throws
    /// `QueueShutDown` after `shutdown`.
    @inlinable
    public final func put(_ item: Element, block: Bool = true, timeout: Double? = nil) throws {
        let deadline = try waitDeadline(block: block, timeout: timeout)
        lock.acquire()
        defer { try? lock.release() }
        let s = state
        if s.pointee.isShutDown { throw QueueShutDown() }
        if maxsize > 0 {
            while s.pointee.items.count >= maxsize {
                if deadline.hasPassed { throw QueueFull() }
                let signalled = notFull.wait(releasing: lock, until: deadline)
                if s.pointee.isShutDown { throw QueueShutDown() }
                if !signalled, s.pointee.items.count >= maxsize { throw QueueFull() }
            }
        }
        s.pointee.items.push(item)
        s.pointee.unfinishedTasks += 1
        if !notEmpty.isEmpty { notEmpty.signal() }
    }

    /// Python `q.put_nowait(item)`: `put(item, block: false)`.
    public final func putNowait(_ item: Element) throws { try put(item, block: false) }

    /// Python `q.get(block=True, timeout=None)`. Waits while the queue is empty when `block`
    /// (for at most `timeout` seconds), then throws `QueueEmpty`; throws `QueueShutDown` once
    /// a shut-down queue is empty.
    @inlinable
    public final func get(block: Bool = true, timeout: Double? = nil) throws -> Element {
        let deadline = try waitDeadline(block: block, timeout: timeout)
        lock.acquire()
        defer { try? lock.release() }
        let s = state
        while s.pointee.items.count == 0 {
            if s.pointee.isShutDown { throw QueueShutDown() }
            if deadline.hasPassed { throw QueueEmpty() }
            let signalled = notEmpty.wait(releasing: lock, until: deadline)
            if !signalled, s.pointee.items.count == 0 {
                if s.pointee.isShutDown { throw QueueShutDown() }
                throw QueueEmpty()
            }
        }
        let item = s.pointee.items.pop()
        if !notFull.isEmpty { notFull.signal() }
        return item
    }

    /// Python `q.get_nowait()`: `get(block: false)`.
    public final func getNowait() throws -> Element { try get(block: false) }

    /// Python `q.task_done()`: marks one item taken by `get` as processed. Throws
    /// `ThreadingError.taskDoneTooManyTimes` when called more often than `put`.
    public final func taskDone() throws {
        try lock.withLock {
            guard state.pointee.unfinishedTasks > 0 else {
                throw ThreadingError(.taskDoneTooManyTimes, "taskDone() called more times than items were put")
            }
            state.pointee.unfinishedTasks -= 1
            if state.pointee.unfinishedTasks == 0 { allTasksDone.broadcast() }
        }
    }

    /// Python `q.join()`: waits until every item put has been marked with `taskDone()`.
    /// Beyond Python, `timeout` bounds the wait; returns false when it ran out.
    @discardableResult
    public final func join(timeout: Double? = nil) -> Bool {
        let deadline = Deadline(timeout: timeout)
        return lock.withLock {
            while state.pointee.unfinishedTasks > 0 {
                if deadline.hasPassed { return false }
                _ = allTasksDone.wait(releasing: lock, until: deadline)
            }
            return true
        }
    }

    /// Python 3.13 `q.shutdown(immediate=False)`: from now on `put` throws `QueueShutDown`,
    /// and `get` does once the queue is empty; blocked callers wake up and throw. With
    /// `immediate`, the queue is emptied at once (those items count as done for `join`).
    public final func shutdown(immediate: Bool = false) {
        lock.withLock {
            let s = state
            s.pointee.isShutDown = true
            if immediate {
                while s.pointee.items.count > 0 {
                    _ = s.pointee.items.pop()
                    if s.pointee.unfinishedTasks > 0 { s.pointee.unfinishedTasks -= 1 }
                }
                allTasksDone.broadcast()
            }
            notEmpty.broadcast()
            notFull.broadcast()
        }
    }

    /// Whether `shutdown` was called.
    public final var isShutDown: Bool { lock.withLock { state.pointee.isShutDown } }

    @usableFromInline
    func waitDeadline(block: Bool, timeout: Double?) throws -> Deadline {
        guard block else { return Deadline(timeout: 0) }
        if let timeout, !(timeout >= 0) {
            throw ThreadingError(.invalidArgument, "a queue timeout must be a non-negative number of seconds, got \(timeout)")
        }
        return Deadline(timeout: timeout)
    }
}

/// A thread-safe last-in first-out queue, a stack (Python `queue.LifoQueue`).
public final class LifoQueue<Element>: Queue<Element>, @unchecked Sendable {
    /// Python `LifoQueue(maxsize=0)`.
    public init(maxsize: Int = 0) { super.init(maxsize: maxsize, order: .lifo) }
}

/// A thread-safe queue that always hands out its smallest item (Python `queue.PriorityQueue`).
///
/// Python code queues `(priority, payload)` tuples; in Swift give an ordering with `by:`
/// (`PriorityQueue<Job>(by: { $0.priority < $1.priority })`) or use a `Comparable` element.
public final class PriorityQueue<Element>: Queue<Element>, @unchecked Sendable {
    /// A priority queue ordered by `areInIncreasingOrder` (smallest first).
    public init(maxsize: Int = 0, by areInIncreasingOrder: @escaping (Element, Element) -> Bool) {
        super.init(maxsize: maxsize, order: .priority(areInIncreasingOrder))
    }
}

extension PriorityQueue where Element: Comparable {
    /// Python `PriorityQueue(maxsize=0)`, smallest element first.
    public convenience init(maxsize: Int = 0) { self.init(maxsize: maxsize, by: <) }
}

/// An unbounded FIFO queue without task tracking (Python `queue.SimpleQueue`).
/// `put` never blocks and never fails.
public final class SimpleQueue<Element>: @unchecked Sendable {
    private let queue = Queue<Element>()

    public init() {}

    /// Python `q.put(item)`.
    public func put(_ item: Element) { try? queue.put(item) }

    /// Python `q.put_nowait(item)`: the same as `put`.
    public func putNowait(_ item: Element) { put(item) }

    /// Python `q.get(block=True, timeout=None)`: throws `QueueEmpty` when none came in time.
    public func get(block: Bool = true, timeout: Double? = nil) throws -> Element {
        try queue.get(block: block, timeout: timeout)
    }

    /// Python `q.get_nowait()`.
    public func getNowait() throws -> Element { try queue.getNowait() }

    /// Python `q.qsize()`.
    public var qsize: Int { queue.qsize }

    /// Python `q.empty()`.
    public var isEmpty: Bool { queue.isEmpty }
}
