/// Lets a fixed number of threads wait for each other (Python `threading.Barrier`).
///
/// Each `wait()` blocks until `parties` threads are waiting; then all continue, each with a
/// distinct index in `0..<parties`. The barrier then resets itself for the next round.
public final class Barrier: @unchecked Sendable, CustomStringConvertible {
    private enum Phase { case filling, draining, resetting, broken }

    /// Python `b.parties`.
    public let parties: Int
    private let action: (@Sendable () throws -> Void)?
    private let defaultTimeout: Double?
    private let lock = Lock()
    private let changed = WaitList()
    // Guarded by lock.
    private var phase = Phase.filling
    private var count = 0

    /// Python `Barrier(parties, action=None, timeout=None)`. `action` runs on one of the
    /// released threads before any of them continues; `timeout` is the default for `wait`.
    /// Throws `ThreadingError.invalidArgument` when `parties` is less than 1.
    public init(parties: Int, action: (@Sendable () throws -> Void)? = nil, timeout: Double? = nil) throws {
        guard parties >= 1 else {
            throw ThreadingError(.invalidArgument, "a Barrier needs at least 1 party, got \(parties)")
        }
        self.parties = parties
        self.action = action
        self.defaultTimeout = timeout
    }

    /// Python `b.wait(timeout=None)`: returns this thread's index in `0..<parties`.
    /// Throws `BrokenBarrierError` when the barrier is or becomes broken (by `abort`, `reset`,
    /// a timeout, or a failing action), and rethrows the action's error in the thread that
    /// ran it. A timeout breaks the barrier for everyone, as in Python.
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Int {
        let deadline = Deadline(timeout: timeout ?? defaultTimeout)
        lock.acquire()
        defer { try? lock.release() }
        // Wait for the previous round to drain or a reset to finish.
        while phase == .draining || phase == .resetting {
            _ = changed.wait(releasing: lock, until: .never)
        }
        if phase == .broken { throw BrokenBarrierError() }

        let index = count
        count += 1
        defer {
            count -= 1
            exitRound()
        }
        if index + 1 == parties {
            try release()
        } else {
            try waitForRelease(deadline)
        }
        return index
    }

    /// Python `b.reset()`: back to the empty, unbroken state; threads waiting now get
    /// `BrokenBarrierError`.
    public func reset() {
        lock.withLock {
            if count > 0 {
                if phase == .filling {
                    phase = .resetting
                } else if phase == .broken {
                    phase = .resetting
                }
                // Draining: the round ends on its own and leaves the barrier filling.
            } else {
                phase = .filling
            }
            changed.broadcast()
        }
    }

    /// Python `b.abort()`: breaks the barrier; current and future `wait` calls throw
    /// `BrokenBarrierError` until `reset()`.
    public func abort() {
        lock.withLock { breakBarrier() }
    }

    /// Python `b.broken`.
    public var isBroken: Bool { lock.withLock { phase == .broken } }

    /// Python `b.n_waiting`: how many threads are waiting in the current round.
    public var nWaiting: Int { lock.withLock { phase == .filling ? count : 0 } }

    /// As Python's repr: `<Barrier at 0x…: waiters=1/3>`, or `broken`.
    public var description: String {
        lock.withLock { phase == .broken ? "<Barrier at \(address(of: self)): broken>" : "<Barrier at \(address(of: self)): waiters=\(phase == .filling ? count : 0)/\(parties)>" }
    }

    // The last thread to arrive runs the action and lets the round go.
    private func release() throws {
        do {
            try action?()
            phase = .draining
            changed.broadcast()
        } catch {
            breakBarrier()
            throw error
        }
    }

    private func waitForRelease(_ deadline: Deadline) throws {
        while phase == .filling {
            if !changed.wait(releasing: lock, until: deadline), phase == .filling {
                breakBarrier()
                throw BrokenBarrierError()
            }
        }
        if phase == .broken || phase == .resetting { throw BrokenBarrierError() }
    }

    // Called as each thread leaves; the last one out lets the next round start.
    private func exitRound() {
        if count == 0, phase == .resetting || phase == .draining {
            phase = .filling
            changed.broadcast()
        }
    }

    private func breakBarrier() {
        phase = .broken
        changed.broadcast()
    }
}
