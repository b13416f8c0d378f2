import ColonyPool
import ColonyWire
import Dispatch
import NIOCore
import Threading

/// Where frames for a worker node go: its session's connection. Pools call it from any
/// thread, under the pool's lock, so that frames leave in the order the pool decided them
/// (a drain's acknowledgement after every assignment sent before it).
public protocol WorkerOutlet: AnyObject, Sendable {
    /// Queues one message (chunked if large) for the worker, after every message queued
    /// before it; never writes inline.
    func send(_ message: Message)
    /// Called once the pool's lock is released: writes the messages queued so far now if
    /// this thread may (it is the connection's event loop), so that an assignment leaves
    /// before the answers of the request that made it; otherwise they leave as queued.
    func writeQueued()
    /// Closes the worker's connection (it was found silent).
    func disconnect(reason: String)
}

/// A pool object (SPEC.md 6.1 type 17): the manager's host for one `PoolScheduler`. Client
/// sessions submit jobs and park on their results; worker sessions join, take assignments
/// and report. Every input runs under the pool's lock; the frames and answers it produces
/// leave after the lock is released.
final class SharedPool: BlockingObject, @unchecked Sendable {
    let type = ObjectType.pool
    private let lock = Lock()
    // Guarded by lock.
    private var scheduler: PoolScheduler
    private var outlets: [PoolWorkerID: any WorkerOutlet] = [:]
    private var jobWaiters: [PoolJobID: [JobWaiter]] = [:]
    private var joinWaiters: [PoolClientID: [ParkedCall]] = [:]
    /// Named submitted calls whose outcome is pushed through `results`, and for each client
    /// the ones finished and not yet pushed, with its parked `results` call.
    private var pushed: Set<PoolJobID> = []
    private var pushable: [PoolClientID: [PoolJobID]] = [:]
    private var resultsWaiters: [PoolClientID: (call: ParkedCall, limit: Int)] = [:]
    /// Clients that said goodbye: their jobs go with them.
    private var leaving: Set<PoolClientID> = []
    /// How long the jobs of a client that died stay for another to adopt.
    private let orphanGraceNanoseconds: UInt64

    /// The largest capacity a worker may announce: more places than any node can fill.
    static let maxCapacity = 65_536

    private enum WaitKind {
        /// `result`: the one outcome of a submitted call.
        case result
        /// `apply`: the one outcome of the call it submitted (cancelling the wait cancels
        /// the call, whose id the client never saw).
        case applied
        /// `next`: up to this many outcomes.
        case next(Int)
        /// `wait`: the job finished (true) or the timeout passed (false).
        case finished
    }

    private struct JobWaiter {
        let call: ParkedCall
        let kind: WaitKind
    }

    /// What leaves the pool after its lock is released (frames to workers are queued under
    /// it, in order).
    private struct Effects {
        var answers: [(ParkedCall, Result<WireValue, RemoteError>)] = []
        var encodedAnswers: [(ParkedCall, ByteBuffer)] = []
        var disconnects: [(any WorkerOutlet, String)] = []
        /// Workers sent frames under the lock.
        var sentTo: [ObjectIdentifier: any WorkerOutlet] = [:]

        mutating func sent(to outlet: any WorkerOutlet) { sentTo[ObjectIdentifier(outlet)] = outlet }

        func deliver() {
            // Assignments first: a worker starts on them while the answers are written.
            for outlet in sentTo.values { outlet.writeQueued() }
            for (call, outcome) in answers {
                switch outcome {
                case .success(let value): call.answer(value)
                case .failure(let error): call.fail(error)
                }
            }
            for (call, body) in encodedAnswers { call.answer(encoded: body) }
            for (outlet, reason) in disconnects { outlet.disconnect(reason: reason) }
        }
    }

    init(settings: PoolSettings, orphanGraceSeconds: Double = 60) {
        scheduler = PoolScheduler(settings: settings)
        orphanGraceNanoseconds = UInt64(orphanGraceSeconds * 1e9)
    }

    /// The clock pool deadlines are read against (the manager's).
    static func now() -> UInt64 { UInt64(DispatchTime.now().uptimeNanoseconds) }

    /// `new` options: `{"chunksize": n, "max_attempts": n, "orphan_grace": seconds}` (SPEC.md 6.1).
    static func make(options: WireValue) throws(RemoteError) -> SharedPool {
        var settings = PoolSettings()
        if let chunksize = try PythonSemantics.optionalInt(options["chunksize"], "chunksize") {
            guard chunksize >= 1 else { throw RemoteError(.valueError, "a pool's chunksize must be at least 1") }
            settings.chunksize = chunksize
        }
        if let attempts = try PythonSemantics.optionalInt(options["max_attempts"], "max_attempts") {
            guard (1...100).contains(attempts) else { throw RemoteError(.valueError, "max_attempts must be between 1 and 100") }
            settings.maxAttempts = attempts
        }
        var grace = 60.0
        if let seconds = options["orphan_grace"], seconds != .null {
            guard let value = seconds.doubleValue, (0...86_400).contains(value) else {
                throw RemoteError(.valueError, "orphan_grace must be 0 to 86400 seconds")
            }
            grace = value
        }
        return SharedPool(settings: settings, orphanGraceSeconds: grace)
    }

    var size: Int { lock.withLock { scheduler.load.queued } }
    var waiting: Int {
        lock.withLock { jobWaiters.values.reduce(0) { $0 + $1.count } + joinWaiters.values.reduce(0) { $0 + $1.count } + resultsWaiters.count }
    }

    // MARK: Client methods

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        guard let poolMethod = PoolMethod(rawValue: method) else { throw unknownMethod(type, method) }
        var effects = Effects()
        defer { effects.deliver() }
        let client = PoolClientID(context.session)
        let now = SharedPool.now()
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            scheduler.advanceClock(to: now)
            switch poolMethod {
            case .submit:
                let arguments = try Arguments(method, values, count: 2...3)
                let task = try taskName(arguments.values[0])
                let call = try argumentList(arguments.values[1], method)
                let chosen = try chosenJob(arguments.optional(2), client)
                let (job, actions) = try scheduler.submit(
                    client: client, task: task, calls: EncodedValues([call]), starred: true, chunksize: 1, ordered: true, id: chosen)
                if chosen != nil { pushed.insert(job) }
                perform(actions, into: &effects)
                return .answer(.integer(job.rawValue))
            case .apply:
                let arguments = try Arguments(method, values, count: 2...2)
                let task = try taskName(arguments.values[0])
                let call = try argumentList(arguments.values[1], method)
                let (job, actions) = try scheduler.submit(
                    client: client, task: task, calls: EncodedValues([call]), starred: true, chunksize: 1, ordered: true)
                perform(actions, into: &effects)
                if scheduler.hasReady(job) { return .answer(try takeOne(job).get()) }
                return try park(job, .applied, timeout: nil, context)
            case .results:
                let arguments = try Arguments(method, values, count: 0...2)
                let limit = try PythonSemantics.optionalInt(arguments.optional(0), "max") ?? Int.max
                guard limit >= 1 else { throw RemoteError(.valueError, "results(): max must be at least 1") }
                let timeout = try timeoutArgument(arguments.optional(1), method)
                if let ready = takePushed(client, limit: limit) { return .answer(ready) }
                if timeout == 0 { return .answer(.array([])) }
                guard resultsWaiters[client] == nil else {
                    throw RemoteError(.valueError, "results(): this session already waits for pushed results; one such call at a time")
                }
                let parked = try context.park(on: self, method)
                resultsWaiters[client] = (parked, limit)
                return .parked(parked, timeout: timeout)
            case .map:
                let arguments = try Arguments(method, values, count: 2...8)
                let task = try taskName(arguments.values[0])
                let starred = arguments.optional(5)?.boolValue ?? false
                let calls = try callList(arguments.values[1], context.encodedCalls, method, starred: starred)
                let chunksize = try PythonSemantics.optionalInt(arguments.optional(2), "chunksize")
                let ordered = arguments.optional(3)?.boolValue ?? true
                let more = arguments.optional(4)?.boolValue ?? false
                let total = try PythonSemantics.optionalInt(arguments.optional(6), "total")
                let chosen = try chosenJob(arguments.optional(7), client)
                let (job, actions) = try scheduler.submit(
                    client: client, task: task, calls: calls, starred: starred, chunksize: chunksize, ordered: ordered, moreInput: more,
                    total: total, id: chosen)
                perform(actions, into: &effects)
                return .answer(.integer(job.rawValue))
            case .feed:
                let arguments = try Arguments(method, values, count: 3...3)
                let job = try ownJob(arguments.values[0], client)
                let calls = try callList(arguments.values[1], context.encodedCalls, method, starred: scheduler.isStarred(job))
                perform(try scheduler.feed(job, calls: calls, last: arguments.values[2].boolValue ?? true), into: &effects)
                return .answer(.null)
            case .result:
                let arguments = try Arguments(method, values, count: 1...2)
                let job = try ownJob(arguments.values[0], client)
                let timeout = try timeoutArgument(arguments.optional(1), method)
                if scheduler.hasReady(job) { return .answer(try takeOne(job).get()) }
                return try park(job, .result, timeout: timeout, context)
            case .next:
                let arguments = try Arguments(method, values, count: 1...3)
                let job = try ownJob(arguments.values[0], client)
                let limit = try PythonSemantics.optionalInt(arguments.optional(1), "max") ?? Int.max
                guard limit >= 1 else { throw RemoteError(.valueError, "next(): max must be at least 1") }
                let timeout = try timeoutArgument(arguments.optional(2), method)
                if scheduler.hasReady(job) { return try takeSome(job, limit: limit) }
                return try park(job, .next(limit), timeout: timeout, context)
            case .wait:
                let arguments = try Arguments(method, values, count: 1...2)
                let job = try ownJob(arguments.values[0], client)
                let timeout = try timeoutArgument(arguments.optional(1), method)
                if scheduler.isFinished(job) { return .answer(true) }
                if timeout == 0 { return .answer(false) }
                return try park(job, .finished, timeout: timeout, context)
            case .ready:
                let arguments = try Arguments(method, values, count: 1...1)
                return .answer(.bool(scheduler.isFinished(try ownJob(arguments.values[0], client))))
            case .successful:
                let arguments = try Arguments(method, values, count: 1...1)
                guard let successful = scheduler.isSuccessful(try ownJob(arguments.values[0], client)) else {
                    throw RemoteError(.valueError, "the result is not ready; wait for it first (Python raises ValueError too)")
                }
                return .answer(.bool(successful))
            case .progress:
                let arguments = try Arguments(method, values, count: 1...1)
                let job = try ownJob(arguments.values[0], client)
                let (completed, total) = scheduler.progress(job) ?? (0, nil)
                return .answer([.integer(completed), total.map { .integer($0) } ?? .null])
            case .cancel:
                let arguments = try Arguments(method, values, count: 1...1)
                let (cancelled, actions) = scheduler.cancel(try ownJob(arguments.values[0], client))
                perform(actions, into: &effects)
                return .answer(.bool(cancelled))
            case .close:
                _ = try Arguments(method, values, count: 0...0)
                perform(scheduler.close(client: client), into: &effects)
                return .answer(.null)
            case .terminate:
                _ = try Arguments(method, values, count: 0...0)
                perform(scheduler.terminate(client: client), into: &effects)
                return .answer(.null)
            case .join:
                let arguments = try Arguments(method, values, count: 0...1)
                let timeout = try timeoutArgument(arguments.optional(0), method)
                guard scheduler.isClosed(client) else {
                    throw RemoteError(.valueError, "Pool is still running: call close() or terminate() before join(), as in Python")
                }
                if scheduler.isIdle(client) { return .answer(true) }
                if timeout == 0 { return .answer(false) }
                let parked = try context.park(on: self, method)
                joinWaiters[client, default: []].append(parked)
                return .parked(parked, timeout: timeout)
            case .workers:
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.array(scheduler.workerRows.map(\.wireValue)))
            case .adopt:
                let arguments = try Arguments(method, values, count: 1...1)
                guard let raw = arguments.values[0].uint64Value else { throw RemoteError(.wrongType, "a job id is an unsigned integer") }
                try scheduler.adopt(PoolJobID(raw), by: client)
                pushed.remove(PoolJobID(raw))  // its new owner asks with `result`
                return .answer(.null)
            }
        }
    }

    /// A job id a client chose for `submit`: its session's id above, a fresh number below.
    private func chosenJob(_ value: WireValue?, _ client: PoolClientID) throws(RemoteError) -> PoolJobID? {
        guard let value, value != .null else { return nil }
        guard let raw = value.uint64Value, raw >> 32 == client.rawValue, raw & 0xFFFF_FFFF != 0 else {
            throw RemoteError(.valueError, "a chosen job id is this session's id << 32 | a number from 1 (session \(client.rawValue))")
        }
        return PoolJobID(raw)
    }

    /// Up to `limit` finished pushed outcomes of `client`, or nil if none is ready.
    private func takePushed(_ client: PoolClientID, limit: Int) -> WireValue? {
        guard var ready = pushable[client], !ready.isEmpty else { return nil }
        var entries: [WireValue] = []
        var taken = 0
        while taken < ready.count, entries.count < limit {
            let job = ready[taken]
            taken += 1
            guard pushed.remove(job) != nil, scheduler.owner(of: job) == client, let outcome = try? takeOne(job) else { continue }
            switch outcome {
            case .success(let value): entries.append([.integer(job.rawValue), true, value])
            case .failure(let error): entries.append([.integer(job.rawValue), false, error.wireValue])
            }
        }
        ready.removeFirst(taken)
        pushable[client] = ready.isEmpty ? nil : ready
        return entries.isEmpty ? nil : .array(entries)
    }

    private func taskName(_ value: WireValue) throws(RemoteError) -> String {
        guard let name = value.stringValue, !name.isEmpty else {
            throw RemoteError(.wrongType, "a task is named by a non-empty string, not \(value.kindDescription)")
        }
        return name
    }

    private func argumentList(_ value: WireValue, _ method: String) throws(RemoteError) -> WireValue {
        guard case .array = value else {
            throw RemoteError(.wrongType, "\(method)(): a call's arguments are an array (a positional argument list), not \(value.kindDescription)")
        }
        return value
    }

    /// A map's calls: single arguments, or argument lists when `starred`; `encoded` when the
    /// session read them so (`value` is then nil).
    private func callList(_ value: WireValue, _ encoded: EncodedValues?, _ method: String, starred: Bool) throws(RemoteError) -> EncodedValues {
        if let encoded {
            if starred, let index = (0..<encoded.count).first(where: { !encoded.isArray($0) }) {
                _ = try argumentList(encoded[index], method)
            }
            return encoded
        }
        guard let calls = value.arrayValue else {
            throw RemoteError(.wrongType, "\(method)(): calls are an array, not \(value.kindDescription)")
        }
        if starred { for call in calls { _ = try argumentList(call, method) } }
        return EncodedValues(calls)
    }

    /// A job id argument that names a job of this client.
    private func ownJob(_ value: WireValue, _ client: PoolClientID) throws(RemoteError) -> PoolJobID {
        guard let raw = value.uint64Value else { throw RemoteError(.wrongType, "a job id is an unsigned integer, not \(value.kindDescription)") }
        let job = PoolJobID(raw)
        guard let owner = scheduler.owner(of: job) else {
            throw RemoteError(.valueError, "\(job) does not exist: its results were already taken, or it was never submitted")
        }
        guard owner == client else { throw RemoteError(.valueError, "\(job) belongs to another client session") }
        return job
    }

    private func takeOne(_ job: PoolJobID) throws(RemoteError) -> Result<WireValue, RemoteError> {
        let (outcomes, _) = try scheduler.take(job, limit: 1)
        return outcomes.first ?? .failure(RemoteError(.internalError, "\(job) finished without an outcome"))
    }

    /// `next`'s answer: `[finished, [value], completed, total or nil, [[position, error]]]`:
    /// the values in the job's order, nil where a call failed, and the failures by position
    /// (so a batch of successes carries no per-call wrapping). Written from the results'
    /// bytes, unless one may hold an object reference: then as a value, whose references
    /// the session counts.
    private func takeSome(_ job: PoolJobID, limit: Int) throws(RemoteError) -> CallResult {
        let progress = scheduler.progress(job)
        let (batch, finished) = try scheduler.takeBatch(job, limit: limit)
        let completed = progress?.completed ?? 0
        let failures = batch.failures.map { WireValue.array([.integer($0.position), $0.error.wireValue]) }
        guard !batch.values.holdsReferences else {
            let total: WireValue = progress?.total.map { .integer($0) } ?? .null
            return .answer([.bool(finished), .array(batch.values.values), .integer(completed), total, .array(failures)])
        }
        var body = ByteBuffer()
        body.writePoolBatch(finished: finished, values: batch.values, completed: completed, total: progress?.total, failures: failures)
        return .encodedAnswer(body)
    }

    private func park(_ job: PoolJobID, _ kind: WaitKind, timeout: Double?, _ context: CallContext) throws(RemoteError) -> CallResult {
        if timeout == 0 { throw RemoteError(.timeout, "\(job) has no result yet (timeout 0)") }
        let parked = try context.park(on: self, "result")
        jobWaiters[job, default: []].append(JobWaiter(call: parked, kind: kind))
        return .parked(parked, timeout: timeout)
    }

    /// Carries out the scheduler's actions: frames to workers, answers to waiting clients.
    private func perform(_ actions: [PoolAction], into effects: inout Effects) {
        for action in actions {
            switch action {
            case .assign(let worker, let assignment, let task, let calls, let starred, let attempt):
                let body = TaskAssignment.body(task: task, calls: calls, starred: starred, attempt: attempt)
                guard let outlet = outlets[worker] else { continue }
                outlet.send(Message(kind: .taskAssign, requestID: assignment.rawValue, body: body))
                effects.sent(to: outlet)
            case .abort(let worker, let assignment):
                outlets[worker]?.send(Message(kind: .cancel, requestID: assignment.rawValue, body: WireValue.null.encoded()))
            case .resultsReady(let job):
                if pushed.contains(job), scheduler.isFinished(job), let owner = scheduler.owner(of: job) {
                    pushable[owner, default: []].append(job)
                    if let waiter = resultsWaiters[owner], let ready = takePushed(owner, limit: waiter.limit) {
                        resultsWaiters[owner] = nil
                        effects.answers.append((waiter.call, .success(ready)))
                    }
                }
                wake(job, into: &effects)
            case .clientIdle(let client):
                for call in joinWaiters.removeValue(forKey: client) ?? [] { effects.answers.append((call, .success(true))) }
            case .disconnect(let worker, let reason):
                if let outlet = outlets.removeValue(forKey: worker) { effects.disconnects.append((outlet, reason)) }
            }
        }
    }

    /// Answers the waiters of `job` that can be answered now.
    private func wake(_ job: PoolJobID, into effects: inout Effects) {
        guard var waiters = jobWaiters.removeValue(forKey: job) else { return }
        var index = 0
        while index < waiters.count {
            let waiter = waiters[index]
            var outcome: Result<WireValue, RemoteError>?
            switch waiter.kind {
            case .finished:
                if scheduler.isFinished(job) { outcome = .success(true) }
            case .result, .applied:
                if scheduler.hasReady(job) {
                    do { outcome = try takeOne(job) } catch { outcome = .failure(error) }
                }
            case .next(let limit):
                if scheduler.hasReady(job) {
                    do {
                        switch try takeSome(job, limit: limit) {
                        case .answer(let value): outcome = .success(value)
                        case .encodedAnswer(let body):
                            effects.encodedAnswers.append((waiter.call, body))
                            waiters.remove(at: index)
                            continue
                        case .parked: outcome = .failure(RemoteError(.internalError, "a batch of results was parked"))
                        }
                    } catch {
                        outcome = .failure(error)
                    }
                }
            }
            if let outcome {
                effects.answers.append((waiter.call, outcome))
                waiters.remove(at: index)
            } else {
                index += 1
            }
        }
        if !waiters.isEmpty { jobWaiters[job] = waiters }
    }

    // MARK: Parked calls

    func cancel(_ call: ParkedCall) -> [UInt64] {
        var effects = Effects()
        let removed = lock.withLock {
            let applied = appliedJob(of: call)
            guard removeWaiter(call) else { return false }
            if let applied {
                perform(scheduler.cancel(applied).actions, into: &effects)
                _ = try? scheduler.take(applied)  // nobody else knows its id
            }
            return true
        }
        effects.deliver()
        if removed { call.fail(RemoteError(.cancelled, "the wait was cancelled")) }
        return []
    }

    /// The job an `apply` parked as `call` waits for (under `lock`).
    private func appliedJob(of call: ParkedCall) -> PoolJobID? {
        for (job, waiters) in jobWaiters {
            for waiter in waiters where waiter.call === call {
                if case .applied = waiter.kind { return job }
                return nil
            }
        }
        return nil
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        var answer: Result<WireValue, RemoteError>?
        lock.withLock {
            for (job, waiters) in jobWaiters {
                guard let index = waiters.firstIndex(where: { $0.call === call }) else { continue }
                if case .finished = waiters[index].kind {
                    answer = .success(false)
                } else {
                    answer = .failure(RemoteError(.timeout, "\(job) has no result yet; the timeout passed"))
                }
                jobWaiters[job]!.remove(at: index)
                return
            }
            if let (client, waiter) = resultsWaiters.first(where: { $0.value.call === call }) {
                resultsWaiters[client] = nil
                _ = waiter
                answer = .success(.array([]))
                return
            }
            if removeWaiter(call) { answer = .success(false) }  // a join
        }
        switch answer {
        case .success(let value)?: call.answer(value)
        case .failure(let error)?: call.fail(error)
        case nil: break
        }
        return []
    }

    /// Removes a parked call from wherever it waits.
    private func removeWaiter(_ call: ParkedCall) -> Bool {
        for (job, waiters) in jobWaiters {
            if let index = waiters.firstIndex(where: { $0.call === call }) {
                jobWaiters[job]!.remove(at: index)
                return true
            }
        }
        for (client, waiters) in joinWaiters {
            if let index = waiters.firstIndex(where: { $0 === call }) {
                joinWaiters[client]!.remove(at: index)
                return true
            }
        }
        if let client = resultsWaiters.first(where: { $0.value.call === call })?.key {
            resultsWaiters[client] = nil
            return true
        }
        return false
    }

    func sessionSaidGoodbye(_ session: UInt64) {
        lock.withLock { _ = leaving.insert(PoolClientID(session)) }
    }

    /// A client session ended: its waits go. After a goodbye its queued and running work is
    /// dropped; after a crash the work goes on and its results wait `orphan_grace` seconds
    /// for a client to adopt them.
    func sessionEnded(_ session: UInt64) -> [UInt64] {
        var effects = Effects()
        let client = PoolClientID(session)
        lock.withLock {
            for job in Array(jobWaiters.keys) {
                jobWaiters[job]!.removeAll { $0.call.session == session }
                if jobWaiters[job]!.isEmpty { jobWaiters[job] = nil }
            }
            joinWaiters[client] = nil
            resultsWaiters[client] = nil
            pushable[client] = nil
            if leaving.remove(client) != nil {
                perform(scheduler.clientGone(client), into: &effects)
                pushed = pushed.filter { $0.rawValue >> 32 != session }  // its named jobs are gone
            } else {
                scheduler.clientLost(client, keepUntil: SharedPool.now() + orphanGraceNanoseconds)
            }
        }
        effects.deliver()
        return []
    }

    func removeAll() -> [UInt64] {
        let (waiting, workers) = lock.withLock {
            defer {
                jobWaiters = [:]
                joinWaiters = [:]
                resultsWaiters = [:]
                outlets = [:]
            }
            return (
                jobWaiters.values.flatMap { $0.map(\.call) } + joinWaiters.values.flatMap { $0 } + resultsWaiters.values.map(\.call),
                Array(outlets.values)
            )
        }
        for call in waiting { call.fail(RemoteError(.noSuchObject, "the pool was deleted while this call waited on it")) }
        for outlet in workers { outlet.disconnect(reason: "the pool was deleted") }
        return []
    }

    func referencedIDs() -> [UInt64] { [] }

    // MARK: Worker sessions

    /// A worker-hello: the node joins with its capacity and tasks.
    func workerJoined(session: UInt64, outlet: any WorkerOutlet, hello: WorkerHello, now: UInt64) throws(RemoteError) {
        guard hello.capacity <= SharedPool.maxCapacity, hello.processes <= SharedPool.maxCapacity else {
            throw RemoteError(
                .valueError, "a worker's capacity and processes must be between 1 and \(SharedPool.maxCapacity), not \(hello.capacity) and \(hello.processes)")
        }
        var effects = Effects()
        lock.withLock {
            let id = PoolWorkerID(session)
            outlets[id] = outlet
            let actions = scheduler.workerJoined(
                id, node: hello.node, pid: hello.pid, capacity: hello.capacity, processes: hello.processes, tasks: Set(hello.tasks),
                heartbeatInterval: .nanoseconds(Int64(hello.heartbeatSeconds * 1e9)), now: now)
            perform(actions, into: &effects)
        }
        effects.deliver()
    }

    /// A frame from a joined worker: results, failures, heartbeats, drain.
    func workerFrame(session: UInt64, _ message: Message, now: UInt64) throws {
        let worker = PoolWorkerID(session)
        let assignment = PoolAssignmentID(message.requestID)
        var effects = Effects()
        defer { effects.deliver() }
        try lock.withLock {
            scheduler.heard(from: worker, now: now)
            switch message.kind {
            case .taskResult:
                let result = try TaskResult(body: message.body)
                perform(try scheduler.completed(assignment, by: worker, results: result.results), into: &effects)
            case .taskFailure:
                let failure = try TaskFailure(body: message.body)
                if failure.lost {
                    perform(try scheduler.lost(assignment, by: worker, index: failure.index, results: failure.results), into: &effects)
                } else {
                    let error = RemoteError(
                        .taskFailed, "\(failure.errorType): \(failure.message)",
                        detail: ["type": .string(failure.errorType), "message": .string(failure.message), "node": .string(nodeName(worker))])
                    perform(
                        try scheduler.failed(assignment, by: worker, index: failure.index, results: failure.results, error: error), into: &effects)
                }
            case .heartbeat:
                _ = try Heartbeat(body: message.body)
            case .drain:
                _ = try Drain(body: message.body)
                scheduler.workerDraining(worker)
                // After every assignment already sent: the node may leave once it has answered
                // everything that came before this.
                outlets[worker]?.send(Message(kind: .drain, requestID: 0, body: Drain(reason: "acknowledged: no more assignments").body))
            default:
                throw RemoteError(.unsupported, "a worker does not send \(message.kind) frames")
            }
        }
    }

    private func nodeName(_ worker: PoolWorkerID) -> String {
        scheduler.workerRows.first { $0.id == worker }?.node ?? "?"
    }

    /// The worker's session ended: its running calls go back to the queue.
    func workerLeft(session: UInt64) {
        var effects = Effects()
        lock.withLock {
            outlets[PoolWorkerID(session)] = nil
            perform(scheduler.workerLeft(PoolWorkerID(session)), into: &effects)
        }
        effects.deliver()
    }

    /// Periodic: workers silent past their heartbeat deadline are lost, and unadopted jobs of
    /// lost clients are dropped.
    func tick(now: UInt64) {
        var effects = Effects()
        lock.withLock {
            perform(scheduler.tick(now: now), into: &effects)
            if !pushed.isEmpty { pushed = pushed.filter { scheduler.exists($0) } }
        }
        effects.deliver()
    }

    /// What `status` shows of this pool.
    func describe(id: UInt64, name: String?) -> WireValue {
        lock.withLock {
            let load = scheduler.load
            let counters = scheduler.counters
            return [
                "id": .integer(id), "name": name.map(WireValue.string) ?? .null,
                "workers": .array(scheduler.workerRows.map(\.wireValue)),
                "queued": .integer(load.queued), "running": .integer(load.running), "jobs": .integer(load.jobs),
                "submitted": .integer(counters.submittedCalls), "done": .integer(counters.completedCalls),
                "failed": .integer(counters.failedCalls), "retried": .integer(counters.retriedCalls),
                "lost_assignments": .integer(counters.lostAssignments),
                "job_progress": .array(scheduler.jobRows.map(\.wireValue)),
            ]
        }
    }
}

extension PoolJobRow {
    /// `total` is nil while the job's input is still arriving (an `imap` being fed).
    var wireValue: WireValue {
        [
            "id": .integer(id.rawValue), "task": .string(task), "done": .integer(completed),
            "total": inputComplete ? .integer(received) : .null, "received": .integer(received),
            "failed": .integer(failed), "retried": .integer(retried),
        ]
    }
}

extension PoolWorkerRow {
    var wireValue: WireValue {
        [
            "node": .string(node), "pid": .integer(pid), "processes": .integer(processes), "capacity": .integer(capacity),
            "busy": .integer(busy), "tasks": .array(tasks.map(WireValue.string)), "draining": .bool(draining),
            "done": .integer(completedCalls),
        ]
    }
}
