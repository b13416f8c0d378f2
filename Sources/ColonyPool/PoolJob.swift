import ColonyWire

/// One job's calls and outcomes. Calls are numbered from 0 in input order; the ones
/// already handed to the client are dropped from the front, so a long streamed `imap` holds
/// only what is queued, running or not yet taken. Arguments and results stay in their
/// MessagePack encoding: the job copies bytes, and builds no value per call.
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
    /// The arguments of the calls from `base` on (kept for retries until handed out).
    private var calls = EncodedValues()
    /// Each call's state, the results, and what is ready (see `Ledger`).
    private var ledger = Ledger()
    /// Results already handed out, whose bytes the next compaction drops.
    private var resultsHandedOut = 0
    private(set) var received = 0
    /// The first call not yet put in any chunk.
    private var nextUnchunked = 0
    /// Chunks to run again (their worker was lost, or a call before them failed): they go
    /// before new chunks.
    var retries = FIFO<Chunk>()
    /// Ordered: the next call to hand out. Unordered: no call before it is left to hand out.
    private var nextToDeliver = 0
    var completed: Int { ledger.completed }
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

    /// A call's state in one word: its result's index in `results` once it succeeded.
    private struct Slot: Equatable {
        let raw: Int
        /// Queued or running.
        static let waiting = Slot(raw: -1)
        static let failed = Slot(raw: -2)
        static let delivered = Slot(raw: -3)
        static func succeeded(_ result: Int) -> Slot { Slot(raw: result) }

        var result: Int? { raw >= 0 ? raw : nil }
        var isDone: Bool { raw >= 0 || self == .failed }
    }

    /// Each call's state and the results, in one stored property: a result changes several
    /// of them at once, and the run-time exclusivity check a class pays on such a property
    /// is then paid once per result, not once per field.
    private struct Ledger {
        /// One per call from the job's `base` on.
        var slots: [Slot] = []
        /// Results; a succeeded slot names its index here.
        var results = EncodedValues()
        /// The call number of each result.
        var resultCalls: [Int] = []
        /// Unordered: finished calls not yet handed out, in completion order.
        var ready = FIFO<Int>()
        var completed = 0

        /// Records call `call` (at `slot`) as succeeded with the one value in `values`, unless
        /// it already had an outcome; whether it was recorded.
        mutating func recordOne(slot: Int, call: Int, _ values: EncodedValues, ordered: Bool) -> Bool {
            guard slot >= 0, slot < slots.count, slots[slot] == .waiting else { return false }
            results.append(contentsOf: values)
            resultCalls.append(call)
            slots[slot] = .succeeded(results.count - 1)
            completed += 1
            if !ordered { ready.append(call) }
            return true
        }
    }

    init(
        id: PoolJobID, client: PoolClientID, task: String, taskKey: Int, starred: Bool, ordered: Bool, chunksize: Int, calls: EncodedValues,
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

    func append(_ calls: EncodedValues) {
        ledger.slots.append(contentsOf: repeatElement(.waiting, count: calls.count))
        self.calls.append(contentsOf: calls)
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
        // Looked at before it is changed: usually empty, and a look is the cheaper check.
        if !retries.isEmpty, let retry = retries.popFirst() { return retry }
        let count = min(chunksize, received - nextUnchunked)
        defer { nextUnchunked += count }
        return Chunk(start: nextUnchunked, count: count, attempt: 1)
    }

    /// The chunk's arguments, where they lie in the job (no copy) unless some call already
    /// has its outcome: then a copy with nil in its place.
    func arguments(_ chunk: Chunk) -> EncodedValues.Slice {
        let range = (chunk.start - base)..<(chunk.start - base + chunk.count)
        if ledger.slots[range].allSatisfy({ $0 == .waiting }) { return EncodedValues.Slice(calls, range) }
        var arguments = EncodedValues()
        for slot in range {
            if ledger.slots[slot] == .waiting { arguments.append(calls, at: slot) } else { arguments.append(.null) }
        }
        return EncodedValues.Slice(arguments)
    }

    func isWaiting(_ index: Int) -> Bool {
        index >= base && index - base < ledger.slots.count && ledger.slots[index - base] == .waiting
    }

    /// Records that a call failed; false if it already had an outcome (a cancelled call's
    /// late result). Successes come in runs, through `recordSuccesses`.
    func recordFailure(_ index: Int, _ error: RemoteError) -> Bool {
        guard isWaiting(index) else { return false }
        ledger.slots[index - base] = .failed
        errors[index] = error
        failed += 1
        ledger.completed += 1
        if !ordered { ledger.ready.append(index) }
        return true
    }

    /// Every call without an outcome yet (queued or running).
    func undoneIndices() -> [Int] {
        ledger.slots.indices.filter { ledger.slots[$0] == .waiting }.map { $0 + base }
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
        if !ordered { return !ledger.ready.isEmpty }
        return nextToDeliver < received && ledger.slots[nextToDeliver - base].isDone
    }

    /// Records successes for the calls from `start` on; those that already had an outcome
    /// (cancelled calls' late results) are skipped. Returns how many were recorded.
    func recordSuccesses(from start: Int, _ values: EncodedValues) -> Int {
        let first = start - base
        // One call (apply_async, imap with chunksize 1): no pass over a range.
        if values.count == 1, ledger.recordOne(slot: first, call: start, values, ordered: ordered) { return 1 }
        if first >= 0, first + values.count <= ledger.slots.count, ledger.slots[first..<(first + values.count)].allSatisfy({ $0 == .waiting }) {
            // The usual case, every call still waiting: one copy of the results.
            let firstResult = ledger.results.count
            ledger.results.append(contentsOf: values)
            ledger.resultCalls.append(contentsOf: start..<(start + values.count))
            withSlots { slots in
                for offset in 0..<values.count { slots[first + offset] = .succeeded(firstResult + offset) }
            }
            ledger.completed += values.count
            if !ordered { for index in start..<(start + values.count) { ledger.ready.append(index) } }
            return values.count
        }
        let recorded = (0..<values.count).filter { isWaiting(start + $0) }.map { offset in
            ledger.results.append(values, at: offset)
            ledger.resultCalls.append(start + offset)
            ledger.slots[first + offset] = .succeeded(ledger.results.count - 1)
            return start + offset
        }
        ledger.completed += recorded.count
        if !ordered { for index in recorded { ledger.ready.append(index) } }
        return recorded.count
    }

    /// Hands out up to `limit` outcomes: the next in input order (ordered), or in completion
    /// order (unordered).
    func takeReady(limit: Int) -> PoolBatch {
        var batch = PoolBatch()
        var next = nextToDeliver
        let (received, base) = (self.received, self.base)
        let ordered = self.ordered
        var unordered = FIFO<Int>()
        swap(&unordered, &ledger.ready)  // moved out, not copied
        var results = EncodedValues()
        swap(&results, &ledger.results)
        var handed = 0
        withSlots { slots in
            // Consecutive results go in one copy.
            var run: Range<Int> = 0..<0
            func flush() {
                batch.values.append(results, in: run)
                run = 0..<0
            }
            func hand(_ index: Int) {
                let slot = slots[index - base]
                precondition(slot.isDone, "only finished calls are handed out")
                handed += 1
                if let result = slot.result {
                    if run.isEmpty || run.upperBound != result {
                        flush()
                        run = result..<result
                    }
                    run = run.lowerBound..<(result + 1)
                } else {
                    flush()
                    batch.failures.append((batch.values.count, errors.removeValue(forKey: index) ?? RemoteError(.internalError, "call \(index) failed")))
                    batch.values.append(.null)
                }
                slots[index - base] = .delivered
            }
            if ordered {
                while handed < limit, next < received, slots[next - base].isDone {
                    hand(next)
                    next += 1
                }
            } else {
                while handed < limit, let index = unordered.popFirst() {
                    guard slots[index - base].isDone else { continue }
                    hand(index)
                }
                while next < received, slots[next - base] == .delivered { next += 1 }
            }
            flush()
        }
        swap(&results, &ledger.results)
        swap(&unordered, &ledger.ready)
        nextToDeliver = next
        delivered += batch.count
        resultsHandedOut += batch.count - batch.failures.count
        // Drop the handed-out front once it is most of the storage.
        let handedOut = nextToDeliver - base
        if handedOut > 1024, handedOut * 2 > ledger.slots.count {
            ledger.slots.removeFirst(handedOut)
            calls.removeFirst(handedOut)
            self.base = nextToDeliver
        }
        if resultsHandedOut > 1024, resultsHandedOut * 2 > ledger.results.count { compactResults() }
        return batch
    }

    /// Keeps only the results not handed out yet (a pass over the results, not the calls).
    private func compactResults() {
        var kept = EncodedValues()
        var keptCalls: [Int] = []
        let (results, resultCalls, base) = (ledger.results, ledger.resultCalls, self.base)
        withSlots { slots in
            var run: Range<Int> = 0..<0
            for (result, call) in resultCalls.enumerated() {
                let slot = call - base
                guard slot >= 0, slot < slots.count, slots[slot].result == result else { continue }
                if run.upperBound != result {
                    kept.append(results, in: run)
                    run = result..<result
                }
                run = run.lowerBound..<(result + 1)
                keptCalls.append(call)
                slots[slot] = .succeeded(keptCalls.count - 1)
            }
            kept.append(results, in: run)
        }
        ledger.results = kept
        ledger.resultCalls = keptCalls
        resultsHandedOut = 0
    }

    /// Runs `body` on the slots moved out of the job: the loops over a million calls then
    /// pay no exclusivity check per call.
    private func withSlots(_ body: (inout UnsafeMutableBufferPointer<Slot>) -> Void) {
        var storage: [Slot] = []
        swap(&storage, &ledger.slots)
        storage.withUnsafeMutableBufferPointer(body)
        swap(&storage, &ledger.slots)
    }
}

/// Outcomes handed out together: each call's value in order (nil where it failed) and the
/// failures by their position in `values`, as the `next` answer carries them.
public struct PoolBatch: Sendable {
    public var values = EncodedValues()
    public var failures: [(position: Int, error: RemoteError)] = []

    public var count: Int { values.count }

    /// The same outcomes one by one.
    public var outcomes: [PoolOutcome] {
        var outcomes = values.values.map { PoolOutcome.success($0) }
        for (position, error) in failures { outcomes[position] = .failure(error) }
        return outcomes
    }
}
