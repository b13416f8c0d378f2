import ColonyWire

/// One job's calls and outcomes. Calls are numbered from 0 in input order; the ones
/// already handed to the client are dropped from the front, so a long streamed `imap` holds
/// only what is queued, running or not yet taken.
///
/// A class: the scheduler changes a job in place at every result, and a struct copied out
/// of the jobs dictionary would copy its million-call storage each time.
final class Job {
    let id: PoolJobID
    private(set) var client: PoolClientID
    /// Set while the job's client is lost: when the job is dropped unless adopted.
    var orphanedUntil: UInt64?
    let task: String
    /// The task name as the scheduler's small number.
    let taskKey: Int
    /// Each call is an argument list (`starmap`), not a single argument.
    let starred: Bool
    let ordered: Bool
    let chunksize: Int
    var inputComplete: Bool
    /// Whether its finish was counted for its client.
    var counted = false
    /// Calls not taken yet (and those after them), from call number `base` on.
    private var base = 0
    private var slots: [Slot] = []
    private(set) var received = 0
    /// The first call not yet put in any chunk.
    private var nextUnchunked = 0
    /// Chunks to run again (their worker was lost, or a call before them failed): they go
    /// before new chunks.
    var retries = FIFO<Chunk>()
    /// Ordered: the next call to hand out. Unordered: no call before it is left to hand out.
    private var nextToDeliver = 0
    /// Unordered: finished calls not yet handed out, in completion order.
    private var ready = FIFO<Int>()
    private(set) var completed = 0
    private(set) var delivered = 0
    private(set) var failed = 0
    /// Calls run again after their worker was lost.
    var retried = 0
    /// Whether the job is in the scheduler's turn queue.
    var inTurn = false
    /// The job left the scheduler (taken in full, cancelled and dropped): late results for
    /// it are ignored.
    var dropped = false

    /// Failed calls' errors, by call number, until handed out (failures are rare; keeping
    /// them out of `Slot` keeps every slot small).
    private var errors: [Int: RemoteError] = [:]

    private enum Slot {
        /// Queued or running: the argument list is kept for a retry.
        case waiting(WireValue)
        case succeeded(WireValue)
        case failed
        case delivered

        var isDone: Bool {
            switch self {
            case .succeeded, .failed: true
            case .waiting, .delivered: false
            }
        }
    }

    init(
        id: PoolJobID, client: PoolClientID, task: String, taskKey: Int, starred: Bool, ordered: Bool, chunksize: Int, calls: [WireValue],
        inputComplete: Bool
    ) {
        self.id = id
        self.client = client
        self.task = task
        self.taskKey = taskKey
        self.starred = starred
        self.ordered = ordered
        self.chunksize = chunksize
        self.inputComplete = inputComplete
        append(calls)
    }

    /// The job is now owned by `client` (it adopted a lost client's job).
    func reassign(to client: PoolClientID) { self.client = client }

    func append(_ calls: [WireValue]) {
        slots.reserveCapacity(slots.count + calls.count)
        for call in calls { slots.append(.waiting(call)) }
        received += calls.count
    }

    var isFinished: Bool { inputComplete && completed == received }

    /// Whether a chunk can be handed out now. A streamed job waits for a full chunk until its
    /// input is complete.
    var hasQueued: Bool {
        let fresh = received - nextUnchunked
        return !retries.isEmpty || fresh >= chunksize || (inputComplete && fresh > 0)
    }

    var queuedCount: Int { retries.elements.reduce(received - nextUnchunked) { $0 + $1.count } }

    func nextChunk() -> Chunk {
        if let retry = retries.popFirst() { return retry }
        let count = min(chunksize, received - nextUnchunked)
        defer { nextUnchunked += count }
        return Chunk(start: nextUnchunked, count: count, attempt: 1)
    }

    func arguments(_ chunk: Chunk) -> [WireValue] {
        slots[(chunk.start - base)..<(chunk.start - base + chunk.count)].map { slot in
            if case .waiting(let arguments) = slot { return arguments }
            return .null
        }
    }

    func isWaiting(_ index: Int) -> Bool {
        guard index >= base, index - base < slots.count, case .waiting = slots[index - base] else { return false }
        return true
    }

    /// Records a call's outcome; false if it already had one (a cancelled call's late result).
    func record(_ index: Int, _ outcome: PoolOutcome) -> Bool {
        guard isWaiting(index) else { return false }
        switch outcome {
        case .success(let value):
            slots[index - base] = .succeeded(value)
        case .failure(let error):
            slots[index - base] = .failed
            errors[index] = error
            failed += 1
        }
        completed += 1
        if !ordered { ready.append(index) }
        return true
    }

    /// Every call without an outcome yet (queued or running).
    func undoneIndices() -> [Int] {
        slots.indices.filter { if case .waiting = slots[$0] { true } else { false } }.map { $0 + base }
    }

    /// Calls waiting in the queue (not running).
    func queuedIndices() -> [Int] {
        retries.elements.flatMap { $0.start..<($0.start + $0.count) } + Array(nextUnchunked..<received)
    }

    func dropQueued() {
        retries = FIFO()
        nextUnchunked = received
    }

    var hasReady: Bool {
        if !ordered { return !ready.isEmpty }
        return nextToDeliver < received && slots[nextToDeliver - base].isDone
    }

    /// Records successes for the calls from `start` on; those that already had an outcome
    /// (cancelled calls' late results) are skipped. Returns how many were recorded.
    func recordSuccesses(from start: Int, _ values: [WireValue]) -> Int {
        var recorded = 0
        var newlyReady: [Int] = []
        withSlots { slots in
            for (offset, value) in values.enumerated() {
                let slot = start + offset - base
                guard slot >= 0, slot < slots.count, case .waiting = slots[slot] else { continue }
                slots[slot] = .succeeded(value)
                recorded += 1
                if !ordered { newlyReady.append(start + offset) }
            }
        }
        completed += recorded
        for index in newlyReady { ready.append(index) }
        return recorded
    }

    /// Hands out up to `limit` outcomes: the next in input order (ordered), or in completion
    /// order (unordered).
    func takeReady(limit: Int) -> PoolBatch {
        var batch = PoolBatch()
        var next = nextToDeliver
        let (received, base) = (self.received, self.base)
        let ordered = self.ordered
        var unordered = FIFO<Int>()
        swap(&unordered, &ready)  // moved out, not copied
        withSlots { slots in
            func hand(_ index: Int) {
                switch slots[index - base] {
                case .succeeded(let value):
                    batch.values.append(value)
                case .failed:
                    batch.failures.append((batch.values.count, errors.removeValue(forKey: index) ?? RemoteError(.internalError, "call \(index) failed")))
                    batch.values.append(.null)
                case .waiting, .delivered:
                    preconditionFailure("only finished calls are handed out")
                }
                slots[index - base] = .delivered
            }
            if ordered {
                batch.values.reserveCapacity(min(limit, received - next))
                while batch.count < limit, next < received, slots[next - base].isDone {
                    hand(next)
                    next += 1
                }
            } else {
                while batch.count < limit, let index = unordered.popFirst() {
                    guard slots[index - base].isDone else { continue }
                    hand(index)
                }
                while next < received, case .delivered = slots[next - base] { next += 1 }
            }
        }
        swap(&unordered, &ready)
        nextToDeliver = next
        delivered += batch.count
        // Drop the handed-out front once it is most of the storage.
        let handedOut = nextToDeliver - base
        if handedOut > 1024, handedOut * 2 > slots.count {
            slots.removeFirst(handedOut)
            self.base = nextToDeliver
        }
        return batch
    }

    /// Runs `body` on the slots moved out of the job: the loops over a million calls then
    /// pay no exclusivity check per call.
    private func withSlots(_ body: (inout UnsafeMutableBufferPointer<Slot>) -> Void) {
        var storage: [Slot] = []
        swap(&storage, &slots)
        storage.withUnsafeMutableBufferPointer(body)
        swap(&storage, &slots)
    }
}

/// Outcomes handed out together: each call's value in order (nil where it failed) and the
/// failures by their position in `values`, as the `next` answer carries them.
public struct PoolBatch: Sendable {
    public var values: [WireValue] = []
    public var failures: [(position: Int, error: RemoteError)] = []

    public var count: Int { values.count }

    /// The same outcomes one by one.
    public var outcomes: [PoolOutcome] {
        var outcomes = values.map { PoolOutcome.success($0) }
        for (position, error) in failures { outcomes[position] = .failure(error) }
        return outcomes
    }
}
