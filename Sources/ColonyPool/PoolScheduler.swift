import ColonyWire

/// One call's outcome: its result value, or the error its caller gets (TaskFailed,
/// WorkerLost, NoSuchTask, Cancelled).
public typealias PoolOutcome = Result<WireValue, RemoteError>

/// What the scheduler's host must do after an input.
public enum PoolAction: Equatable, Sendable {
    /// Send `calls` of `task` to `worker` as assignment `assignment`: each call its one
    /// argument, or with `starred` its argument list. `calls` shares the job's storage: write
    /// it out before the next input changes the scheduler (holding it makes that input copy).
    case assign(worker: PoolWorkerID, assignment: PoolAssignmentID, task: String, calls: EncodedValues.Slice, starred: Bool, attempt: Int)
    /// Tell `worker` to stop running `assignment` (its job was cancelled or terminated); the
    /// worker still answers it, and that answer frees its place.
    case abort(worker: PoolWorkerID, assignment: PoolAssignmentID)
    /// `job` has new results to take, or has finished: wake whoever waits on it.
    case resultsReady(PoolJobID)
    /// Every job of `client` has finished: wake its `join`.
    case clientIdle(PoolClientID)
    /// `worker` was silent past its heartbeat deadline and now counts as lost: close its
    /// connection.
    case disconnect(worker: PoolWorkerID, reason: String)
}

/// Limits and intervals of one pool.
public struct PoolSettings: Sendable, Equatable {
    /// How many times a call is run before its worker's death fails it with WorkerLost.
    public var maxAttempts: Int
    /// Workers send a heartbeat this often; three silent intervals lose the worker.
    public var heartbeatInterval: Duration
    /// The chunk size for `map` when the caller gives none (nil: Python's automatic size).
    public var chunksize: Int?
    /// A worker whose assignments take less than this each (per process, measured from
    /// assignment to report) gets all its prefetch places; a slower one, or one not measured
    /// yet, holds at most one queued assignment per process. Prefetch hides the round trip
    /// of short tasks; behind long ones it would only keep work (and other jobs' turns) queued
    /// on one node while another has room.
    public var quickAssignment: Duration

    public init(maxAttempts: Int = 3, heartbeatInterval: Duration = .seconds(5), chunksize: Int? = nil, quickAssignment: Duration = .milliseconds(1)) {
        self.maxAttempts = maxAttempts
        self.heartbeatInterval = heartbeatInterval
        self.chunksize = chunksize
        self.quickAssignment = quickAssignment
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

/// The pool's scheduling as a pure state machine: jobs and their calls, workers with
/// capacity, chunks assigned as capacity frees (pull-based), attempts, re-assignment of a
/// lost worker's calls, results in input order (map, imap) or completion order
/// (imap_unordered), cancel, close/join/terminate per client. Inputs return `PoolAction`s;
/// time is passed in. The manager hosts it for remote worker nodes; nothing here does I/O.
///
/// Fairness: jobs with queued calls take turns, one chunk each, so a small apply waits for
/// at most one chunk per other job, not behind a million-call map.
public struct PoolScheduler {
    public let settings: PoolSettings
    /// `settings.quickAssignment`, as the clock counts.
    private let quickNanoseconds: UInt64

    // Jobs and workers are objects: the hot path (an answer frees a place, the place takes
    // the next chunk) follows references instead of looking ids up.
    private var jobs: [PoolJobID: Job] = [:]
    private var workers: [PoolWorkerID: Worker] = [:]
    private var assignments = AssignmentTable()
    private var clients: [PoolClientID: Client] = [:]
    /// Jobs with calls to hand out, in turn order; a job's `inTurn` says it is in here.
    private var turns = FIFO<Job>()
    /// Jobs that no free worker can run (task not registered there); back in turn when a
    /// place frees or a worker joins.
    private var blocked: [Job] = []
    /// One entry per free place of a worker; entries of workers that left or drain are
    /// skipped when met.
    private var freePlaces = FIFO<Worker>()
    /// Free places beyond a worker's processes (its prefetch): used only when no worker has
    /// an idle process, so work spreads over nodes before it queues on any of them.
    private var sparePlaces = FIFO<Worker>()
    /// Task names as small numbers, so a place checks a task without hashing its name.
    private var taskKeys: [String: Int] = [:]
    private var nextJob: UInt64 = 1
    /// The latest time an input brought (`advanceClock`, `tick`, joins, heartbeats).
    public private(set) var clock: UInt64 = 0
    /// Totals since the pool started, for `status`.
    public private(set) var counters = PoolCounters()

    public init(settings: PoolSettings = PoolSettings()) {
        precondition(settings.maxAttempts >= 1, "a pool must allow at least one attempt per call")
        self.settings = settings
        quickNanoseconds = PoolSettings.nanoseconds(settings.quickAssignment)
    }

    // MARK: Workers

    /// A worker node joined with `capacity` places (how many chunks it holds at once),
    /// `processes` running them, and the tasks it registered.
    /// `heartbeatInterval` is the worker's own (the pool's setting when nil).
    public mutating func workerJoined(
        _ id: PoolWorkerID, node: String, pid: Int, capacity: Int, processes: Int, tasks: Set<String>, heartbeatInterval: Duration? = nil,
        now: UInt64
    ) -> [PoolAction] {
        precondition(capacity >= 1, "a worker's capacity is checked before it joins")
        precondition(workers[id] == nil, "\(id) joined twice")
        advanceClock(to: now)
        let interval = heartbeatInterval ?? settings.heartbeatInterval
        var keys: Set<Int> = []
        for task in tasks { keys.insert(taskKey(task)) }
        let worker = Worker(
            id: id, node: node, pid: pid, capacity: capacity, processes: max(1, processes), tasks: tasks, taskKeys: keys, silenceLimit: PoolSettings.nanoseconds(interval) * 3, lastHeard: now)
        workers[id] = worker
        for place in 0..<capacity {
            if place < worker.processes { freePlaces.append(worker) } else { sparePlaces.append(worker) }
        }
        unblockAll()
        var actions: [PoolAction] = []
        dispatch(into: &actions)
        return actions
    }

    /// Any frame from the worker: it is alive.
    public mutating func heard(from id: PoolWorkerID, now: UInt64) {
        advanceClock(to: now)
        workers[id]?.lastHeard = now
    }

    /// The time now, for measuring how long assignments take; the host calls it before each
    /// input that has no time of its own.
    public mutating func advanceClock(to now: UInt64) {
        clock = max(clock, now)
    }

    /// The worker announced it is leaving: it gets no new assignments and finishes the
    /// ones it has.
    public mutating func workerDraining(_ id: PoolWorkerID) {
        workers[id]?.draining = true
    }

    /// The worker's connection ended, or it was found silent: each call it was running goes
    /// back to the queue with one more attempt (split into single calls, so that one call
    /// that kills its workers cannot take the rest of its chunk down with it), or fails with
    /// WorkerLost when it has had all its attempts.
    public mutating func workerLeft(_ id: PoolWorkerID) -> [PoolAction] {
        guard let worker = workers.removeValue(forKey: id) else { return [] }
        worker.left = true
        var actions: [PoolAction] = []
        // A worker's loss is rare: its assignments are found by a scan, not kept per worker.
        for (assignmentID, _) in assignments.all(where: { $0.worker === worker }) {
            guard let assignment = assignments.remove(assignmentID) else { continue }
            counters.lostAssignments += 1
            requeue(assignment, from: 0, blamedOffsets: 0..<assignment.count, node: worker.node, into: &actions)
        }
        failTasksNoWorkerRuns(into: &actions)
        dispatch(into: &actions)
        return actions
    }

    /// Checks deadlines: a worker silent for three heartbeat intervals is lost, and the jobs
    /// of a lost client that nobody adopted in time are dropped.
    public mutating func tick(now: UInt64) -> [PoolAction] {
        advanceClock(to: now)
        var actions: [PoolAction] = []
        for id in jobs.keys.sorted() {
            if let deadline = jobs[id]!.orphanedUntil, now >= deadline { actions += drop(id) }
        }
        return actions + expireSilentWorkers(now: now)
    }

    private mutating func expireSilentWorkers(now: UInt64) -> [PoolAction] {
        let silent = workers.values.filter { now > $0.lastHeard && now - $0.lastHeard > $0.silenceLimit }.map(\.id)
        var actions: [PoolAction] = []
        for id in silent.sorted(by: { $0.rawValue < $1.rawValue }) {
            let seconds = Double(workers[id]!.silenceLimit) / 3e9
            actions.append(.disconnect(worker: id, reason: "no heartbeat for three intervals (\(seconds) s each)"))
            actions += workerLeft(id)
        }
        return actions
    }

    // MARK: Clients

    /// Python's `apply_async` / `map_async` / `imap`: a job running `task` once per call in
    /// `calls` (each its one argument, or with `starred` its argument list; the scheduler
    /// does not look inside). `moreInput` keeps the job open for `feed` (streamed input).
    /// `chunksize` nil picks Python's automatic size for a complete input, or for a streamed
    /// one whose `total` calls are known, and 1 for another streamed one (as `imap`'s default).
    public mutating func submit(
        client: PoolClientID, task: String, calls: EncodedValues, starred: Bool = false, chunksize: Int?, ordered: Bool, moreInput: Bool = false,
        total: Int? = nil, id chosen: PoolJobID? = nil
    ) throws(RemoteError) -> (PoolJobID, [PoolAction]) {
        if clients[client]?.closed == true {
            throw RemoteError(.valueError, "Pool not running: this client closed or terminated the pool")
        }
        if let chunksize, chunksize < 1 {
            throw RemoteError(.valueError, "chunksize must be at least 1, not \(chunksize)")
        }
        if !workers.isEmpty, !workers.values.contains(where: { $0.tasks.contains(task) }) {
            throw RemoteError(.noSuchTask, noWorkerRuns(task))
        }
        if let chosen, jobs[chosen] != nil { throw RemoteError(.valueError, "\(chosen) exists already; choose a new id") }
        let id = chosen ?? PoolJobID(nextJob)
        if chosen == nil { nextJob += 1 }
        if let total, total < calls.count {
            throw RemoteError(.valueError, "total (\(total)) is less than the \(calls.count) calls already given")
        }
        let size = chunksize ?? settings.chunksize ?? (moreInput && total == nil ? 1 : automaticChunksize(calls: total ?? calls.count))
        let job = Job(
            id: id, client: client, task: task, taskKey: taskKey(task), starred: starred, ordered: ordered, chunksize: size, calls: calls,
            inputComplete: !moreInput)
        jobs[id] = job
        clients[client, default: Client()].unfinished += 1
        counters.submittedCalls += calls.count
        var actions: [PoolAction] = []
        finishIfDone(job, into: &actions)
        enterTurn(job)
        dispatch(into: &actions)
        return (id, actions)
    }

    /// More input for a job submitted with `moreInput`; `last` ends it.
    public mutating func feed(_ id: PoolJobID, calls: EncodedValues, last: Bool) throws(RemoteError) -> [PoolAction] {
        guard let job = jobs[id] else { throw RemoteError(.valueError, "\(id) does not exist (finished and taken, or cancelled)") }
        guard !job.inputComplete else { throw RemoteError(.valueError, "\(id) already has all its input") }
        job.append(calls)
        job.inputComplete = last
        counters.submittedCalls += calls.count
        var actions: [PoolAction] = []
        finishIfDone(job, into: &actions)
        enterTurn(job)
        dispatch(into: &actions)
        return actions
    }

    /// Python's `Future.cancel` / `AsyncResult` cancel: calls not finished yet end with
    /// Cancelled; running ones are aborted. Returns false if the job had already finished.
    public mutating func cancel(_ id: PoolJobID) -> (cancelled: Bool, actions: [PoolAction]) {
        guard let job = jobs[id], !job.isFinished else { return (false, []) }
        var actions: [PoolAction] = []
        let cancelled = RemoteError(.cancelled, "the call was cancelled (cancel or terminate) before it finished")
        for index in job.undoneIndices() { _ = job.recordFailure(index, cancelled) }
        job.inputComplete = true
        job.dropQueued()
        for (assignmentID, assignment) in assignments.all(where: { $0.job === job }) {
            actions.append(.abort(worker: assignment.worker.id, assignment: assignmentID))
        }
        counters.cancelledJobs += 1
        actions.append(.resultsReady(id))
        finishIfDone(job, into: &actions)
        return (true, actions)
    }

    /// Python's `Pool.close`: this client submits no more.
    public mutating func close(client: PoolClientID) -> [PoolAction] {
        clients[client, default: Client()].closed = true
        return clients[client]!.unfinished == 0 ? [.clientIdle(client)] : []
    }

    /// Python's `Pool.terminate`: closes, and cancels every unfinished job of this client.
    public mutating func terminate(client: PoolClientID) -> [PoolAction] {
        var actions = close(client: client)
        for id in jobs.keys.sorted() where jobs[id]!.client == client {
            actions += cancel(id).actions
        }
        return actions
    }

    /// Whether every job of `client` has finished (what `join` waits for).
    public func isIdle(_ client: PoolClientID) -> Bool { (clients[client]?.unfinished ?? 0) == 0 }

    /// Whether `client` closed its pool (`join` before `close` is an error, as in Python).
    public func isClosed(_ client: PoolClientID) -> Bool { clients[client]?.closed ?? false }

    /// The client left on purpose (it said goodbye): its queued work is dropped, its running
    /// calls are aborted, and its results are freed, since nobody will read them.
    public mutating func clientGone(_ client: PoolClientID) -> [PoolAction] {
        var actions: [PoolAction] = []
        for id in jobs.keys.sorted() where jobs[id]!.client == client {
            actions += drop(id)
        }
        clients[client] = nil
        return actions
    }

    /// The client's connection died without a goodbye (it crashed, or the network went):
    /// its jobs keep running and their results are kept until `deadline`, so that the client
    /// (restarted, or another one) can `adopt` them by id. Python's Pool dies with its
    /// process and loses them. After the deadline, `tick` drops them as `clientGone` would.
    public mutating func clientLost(_ client: PoolClientID, keepUntil deadline: UInt64) {
        for id in jobs.keys where jobs[id]!.client == client { jobs[id]!.orphanedUntil = deadline }
        clients[client] = nil
    }

    /// Gives the job of a lost client to `client`, which then takes its results.
    public mutating func adopt(_ id: PoolJobID, by client: PoolClientID) throws(RemoteError) {
        guard let job = jobs[id] else { throw RemoteError(.valueError, "\(id) does not exist (taken, dropped, or never submitted)") }
        guard job.orphanedUntil != nil else {
            throw RemoteError(.valueError, "\(id) belongs to a client that is still connected; only a lost client's jobs can be adopted")
        }
        job.orphanedUntil = nil
        job.reassign(to: client)
        if !job.counted { clients[client, default: Client()].unfinished += 1 }
    }

    /// Cancels a job and forgets it at once.
    private mutating func drop(_ id: PoolJobID) -> [PoolAction] {
        let aborts = cancel(id).actions.filter { if case .abort = $0 { true } else { false } }
        jobs.removeValue(forKey: id)?.dropped = true
        return aborts
    }

    // MARK: Results from workers

    /// Every call of `assignment` succeeded, with `results` in call order.
    public mutating func completed(_ assignmentID: PoolAssignmentID, by worker: PoolWorkerID, results: EncodedValues)
        throws(RemoteError) -> [PoolAction]
    {
        let assignment = try take(assignmentID, from: worker)
        var actions: [PoolAction] = []
        actions.reserveCapacity(3)
        guard results.count == assignment.count else {
            requeue(assignment, from: 0, blamedOffsets: 0..<assignment.count, node: nodeName(worker), into: &actions)
            dispatch(into: &actions)
            throw RemoteError(.badRequest, "\(assignmentID) had \(assignment.count) calls, but its result holds \(results.count) values")
        }
        record(assignment, results: results, into: &actions)
        dispatch(into: &actions)
        return actions
    }

    /// Call `index` of `assignment` threw `error` (the task's own error: not retried); the
    /// calls before it gave `results`, the calls after it go back to the queue.
    public mutating func failed(
        _ assignmentID: PoolAssignmentID, by worker: PoolWorkerID, index: Int, results: EncodedValues, error: RemoteError
    ) throws(RemoteError) -> [PoolAction] {
        let assignment = try take(assignmentID, from: worker)
        var actions: [PoolAction] = []
        guard index >= 0, index < assignment.count, results.count == index else {
            requeue(assignment, from: 0, blamedOffsets: 0..<assignment.count, node: nodeName(worker), into: &actions)
            dispatch(into: &actions)
            throw RemoteError(.badRequest, "a failure report for \(assignmentID) (\(assignment.count) calls) needs 0 ≤ index < count and index results")
        }
        record(assignment, results: results, into: &actions)
        let job = assignment.job
        if !job.dropped, job.recordFailure(assignment.start + index, error) {
            counters.failedCalls += 1
            actions.append(.resultsReady(job.id))
            finishIfDone(job, into: &actions)
        }
        requeue(assignment, from: index + 1, blamedOffsets: 0..<0, node: "", into: &actions)
        dispatch(into: &actions)
        return actions
    }

    /// The process running call `index` of `assignment` died (or was stopped by an abort):
    /// the calls before it gave `results`; call `index` is retried with one more attempt (or
    /// fails with WorkerLost), the calls after it are queued again as they were.
    public mutating func lost(_ assignmentID: PoolAssignmentID, by worker: PoolWorkerID, index: Int, results: EncodedValues)
        throws(RemoteError) -> [PoolAction]
    {
        let assignment = try take(assignmentID, from: worker)
        var actions: [PoolAction] = []
        let index = min(max(0, index), assignment.count - 1)
        let finished = results[0..<min(index, results.count)]
        record(assignment, results: finished, into: &actions)
        requeue(assignment, from: finished.count, blamedOffsets: index..<(index + 1), node: nodeName(worker), into: &actions)
        dispatch(into: &actions)
        return actions
    }

    // MARK: Taking results

    /// Up to `limit` outcomes that are ready to hand to the client: the next ones in input
    /// order for an ordered job, any finished ones for an unordered job. `finished` is true
    /// once every outcome has been taken; the job is then forgotten.
    public mutating func take(_ id: PoolJobID, limit: Int = .max) throws(RemoteError) -> (outcomes: [PoolOutcome], finished: Bool) {
        let (batch, finished) = try takeBatch(id, limit: limit)
        return (batch.outcomes, finished)
    }

    /// `take` as values and failures apart, the shape the `next` answer has.
    public mutating func takeBatch(_ id: PoolJobID, limit: Int = .max) throws(RemoteError) -> (batch: PoolBatch, finished: Bool) {
        guard let job = jobs[id] else { throw RemoteError(.valueError, "\(id) does not exist (its results were taken, or it was cancelled)") }
        let batch = job.takeReady(limit: limit)
        let finished = job.isFinished && job.delivered == job.received
        if finished { jobs.removeValue(forKey: id)?.dropped = true }
        return (batch, finished)
    }

    /// Whether `take` would return something now (or report the job finished).
    public func hasReady(_ id: PoolJobID) -> Bool {
        guard let job = jobs[id] else { return true }
        return job.hasReady || (job.isFinished && job.delivered == job.received)
    }

    /// Whether every call of the job has its outcome (Python's `ready()`).
    public func isFinished(_ id: PoolJobID) -> Bool { jobs[id]?.isFinished ?? true }

    /// Whether the job exists (submitted and not yet taken in full).
    public func exists(_ id: PoolJobID) -> Bool { jobs[id] != nil }

    /// Whether every call finished without error (Python's `successful()`); nil while running.
    public func isSuccessful(_ id: PoolJobID) -> Bool? {
        guard let job = jobs[id] else { return nil }
        return job.isFinished ? job.failed == 0 : nil
    }

    /// Calls finished so far, and how many there are once the input is complete.
    public func progress(_ id: PoolJobID) -> (completed: Int, total: Int?)? {
        guard let job = jobs[id] else { return nil }
        return (job.completed, job.inputComplete ? job.received : nil)
    }

    /// Whether the job's calls are argument lists.
    public func isStarred(_ id: PoolJobID) -> Bool { jobs[id]?.starred ?? false }

    /// The client that submitted the job.
    public func owner(of id: PoolJobID) -> PoolClientID? { jobs[id]?.client }

    // MARK: Status

    /// One row per worker, for `status`.
    public var workerRows: [PoolWorkerRow] {
        workers.values.sorted { $0.id.rawValue < $1.id.rawValue }.map {
            PoolWorkerRow(
                id: $0.id, node: $0.node, pid: $0.pid, processes: $0.processes, capacity: $0.capacity, busy: $0.busy,
                tasks: $0.tasks.sorted(), draining: $0.draining, completedCalls: $0.completedCalls)
        }
    }

    /// One row per job not yet taken in full, oldest first, for `status` and the dashboard's
    /// progress bars.
    public var jobRows: [PoolJobRow] {
        jobs.keys.sorted().map { id in
            let job = jobs[id]!
            return PoolJobRow(
                id: id, task: job.task, completed: job.completed, received: job.received, inputComplete: job.inputComplete,
                failed: job.failed, retried: job.retried)
        }
    }

    /// Calls waiting for a worker, calls being run, and jobs not yet taken in full.
    public var load: (queued: Int, running: Int, jobs: Int) {
        var queued = 0
        for job in jobs.values { queued += job.queuedCount }
        let running = assignments.all(where: { _ in true }).reduce(0) { $0 + $1.assignment.count }
        return (queued, running, jobs.count)
    }

    public var workerCount: Int { workers.count }

    // MARK: Internals

    private func automaticChunksize(calls: Int) -> Int {
        // Python's Pool.map: chunksize, extra = divmod(len(iterable), len(self._pool) * 4).
        let processes = max(1, workers.values.reduce(0) { $0 + ($1.draining ? 0 : $1.processes) })
        let (size, extra) = calls.quotientAndRemainder(dividingBy: processes * 4)
        return max(1, size + (extra > 0 ? 1 : 0))
    }

    private func noWorkerRuns(_ task: String) -> String {
        "no worker in this pool registered a task named '\(task)'; register it in the worker program (TaskRegistry.register) or start a worker that has it"
    }

    private func nodeName(_ worker: PoolWorkerID) -> String { workers[worker]?.node ?? "?" }

    /// The small number standing for a task name.
    private mutating func taskKey(_ task: String) -> Int {
        if let key = taskKeys[task] { return key }
        let key = taskKeys.count
        taskKeys[task] = key
        return key
    }

    private mutating func take(_ assignmentID: PoolAssignmentID, from worker: PoolWorkerID) throws(RemoteError) -> Assignment {
        guard let assignment = assignments.remove(assignmentID, heldBy: worker) else {
            throw RemoteError(.badRequest, "\(worker) does not hold \(assignmentID); results for it are ignored")
        }
        let holder = assignment.worker
        holder.busy -= 1
        holder.completedCalls += assignment.count
        holder.measure(assignment, now: clock, quick: quickNanoseconds)
        if !holder.left && !holder.draining {
            if holder.busy < holder.processes { freePlaces.append(holder) } else { sparePlaces.append(holder) }
            if holder.isQuick, holder.withheld > 0 {
                for _ in 0..<holder.withheld { sparePlaces.append(holder) }
                holder.withheld = 0
            }
            unblockAll()
        }
        return assignment
    }

    /// Records the first `results.count` calls of `assignment` as succeeded.
    private mutating func record(_ assignment: Assignment, results: EncodedValues, into actions: inout [PoolAction]) {
        let job = assignment.job
        guard !results.isEmpty, !job.dropped else { return }
        let recorded = job.recordSuccesses(from: assignment.start, results)
        guard recorded > 0 else { return }
        counters.completedCalls += recorded
        actions.append(.resultsReady(job.id))
        finishIfDone(job, into: &actions)
    }

    /// Puts the calls of `assignment` from `offset` on back in the queue. Calls at
    /// `blamedOffsets` were running when their worker died: one more attempt each, as single
    /// calls, or WorkerLost past the limit. The rest keep their attempt and stay one chunk.
    private mutating func requeue(
        _ assignment: Assignment, from offset: Int, blamedOffsets: Range<Int>, node: String, into actions: inout [PoolAction]
    ) {
        let job = assignment.job
        guard offset < assignment.count, !job.dropped else { return }
        var failedNow = false
        // Unblamed calls stay together in runs of consecutive calls.
        var unblamed: Range<Int>?
        func closeRun() {
            if let run = unblamed { job.retries.append(Chunk(start: run.lowerBound, count: run.count, attempt: assignment.attempt)) }
            unblamed = nil
        }
        for position in offset..<assignment.count {
            let index = assignment.start + position
            guard job.isWaiting(index) else { continue }
            if blamedOffsets.contains(position) {
                closeRun()
                let attempt = assignment.attempt + 1
                if attempt > settings.maxAttempts {
                    let error = RemoteError(
                        .workerLost,
                        "the worker running this call of '\(job.task)' was lost on all \(settings.maxAttempts) attempts (last on node \(node))",
                        detail: ["task": .string(job.task), "attempts": .integer(settings.maxAttempts), "node": .string(node)])
                    _ = job.recordFailure(index, error)
                    counters.failedCalls += 1
                    failedNow = true
                } else {
                    job.retries.append(Chunk(start: index, count: 1, attempt: attempt))
                    job.retried += 1
                    counters.retriedCalls += 1
                }
            } else {
                unblamed = (unblamed?.lowerBound ?? index)..<(index + 1)
            }
        }
        closeRun()
        if failedNow {
            actions.append(.resultsReady(job.id))
            finishIfDone(job, into: &actions)
        }
        enterTurn(job)
    }

    /// Jobs whose task no remaining worker registered fail their queued calls, once some
    /// worker is connected (with none, they wait for one to join).
    private mutating func failTasksNoWorkerRuns(into actions: inout [PoolAction]) {
        guard !workers.isEmpty else { return }
        let known = workers.values.reduce(into: Set<String>()) { $0.formUnion($1.tasks) }
        for id in jobs.keys.sorted() where !known.contains(jobs[id]!.task) && jobs[id]!.hasQueued {
            let job = jobs[id]!
            let error = RemoteError(.noSuchTask, noWorkerRuns(job.task))
            for index in job.queuedIndices() where job.recordFailure(index, error) { counters.failedCalls += 1 }
            job.dropQueued()
            actions.append(.resultsReady(id))
            finishIfDone(job, into: &actions)
        }
    }

    private mutating func finishIfDone(_ job: Job, into actions: inout [PoolAction]) {
        guard job.isFinished, !job.counted else { return }
        job.counted = true
        if actions.last != .resultsReady(job.id) && !actions.contains(.resultsReady(job.id)) { actions.append(.resultsReady(job.id)) }
        guard clients[job.client] != nil else { return }
        clients[job.client]!.unfinished -= 1
        if clients[job.client]!.unfinished == 0 && clients[job.client]!.closed { actions.append(.clientIdle(job.client)) }
    }

    private mutating func enterTurn(_ job: Job) {
        guard !job.dropped, job.hasQueued, !job.inTurn else { return }
        job.inTurn = true
        turns.append(job)
    }

    private mutating func unblockAll() {
        guard !blocked.isEmpty else { return }
        for job in blocked { enterTurn(job) }
        blocked = []
    }

    /// Hands chunks to free places until either runs out, jobs taking turns.
    private mutating func dispatch(into actions: inout [PoolAction]) {
        while !freePlaces.isEmpty || !sparePlaces.isEmpty, let job = turns.popFirst() {
            job.inTurn = false
            guard !job.dropped, job.hasQueued else { continue }
            guard let worker = takePlace(for: job.taskKey) else {
                blocked.append(job)
                continue
            }
            let chunk = job.nextChunk()
            let assignmentID = assignments.insert(
                Assignment(job: job, worker: worker, start: chunk.start, count: chunk.count, attempt: chunk.attempt, assignedAt: clock, ahead: worker.busy))
            worker.busy += 1
            counters.assignments += 1
            actions.append(
                .assign(
                    worker: worker.id, assignment: assignmentID, task: job.task, calls: job.arguments(chunk), starred: job.starred,
                    attempt: chunk.attempt))
            enterTurn(job)
        }
    }

    /// A free place on a worker that registered the task, or nil: an idle process first,
    /// then a prefetch place.
    private mutating func takePlace(for task: Int) -> Worker? {
        if let worker = Self.takePlace(from: &freePlaces, for: task) { return worker }
        // A prefetch place of a worker at its limit now is set aside until it is quick again.
        while let worker = sparePlaces.first, worker.isUsable, !worker.hasRoomToPrefetch {
            _ = sparePlaces.popFirst()
            worker.withheld += 1
        }
        return Self.takePlace(from: &sparePlaces, for: task)
    }

    private static func takePlace(from places: inout FIFO<Worker>, for task: Int) -> Worker? {
        while let worker = places.first, !worker.isUsable { _ = places.popFirst() }
        guard let first = places.first else { return nil }
        if first.taskKeys.contains(task), first.hasRoomToPrefetch { return places.popFirst() }
        return places.removeFirst { $0.isUsable && $0.hasRoomToPrefetch && $0.taskKeys.contains(task) }
    }
}

/// Totals since the pool started.
public struct PoolCounters: Sendable, Equatable {
    public var submittedCalls = 0
    public var completedCalls = 0
    public var failedCalls = 0
    public var retriedCalls = 0
    public var assignments = 0
    public var lostAssignments = 0
    public var cancelledJobs = 0
}

/// A worker as `status` shows it.
/// One job's progress: calls finished of those received (all of them once `inputComplete`).
public struct PoolJobRow: Sendable, Equatable {
    public var id: PoolJobID
    public var task: String
    public var completed: Int
    public var received: Int
    public var inputComplete: Bool
    public var failed: Int
    public var retried: Int
}

public struct PoolWorkerRow: Sendable, Equatable {
    public var id: PoolWorkerID
    public var node: String
    public var pid: Int
    public var processes: Int
    public var capacity: Int
    public var busy: Int
    public var tasks: [String]
    public var draining: Bool
    public var completedCalls: Int
}

/// A run of consecutive calls of one job, at one attempt.
struct Chunk: Equatable {
    var start: Int
    var count: Int
    var attempt: Int
}

/// The assignments out at workers, found by id without hashing: an id is a slot number and
/// that slot's generation, so a reused slot never answers for an old id. Memory is bounded
/// by the most assignments out at once, however long one of them runs.
struct AssignmentTable {
    private var slots: [Assignment?] = []
    private var generations: [UInt32] = []
    private var free: [Int] = []

    mutating func insert(_ assignment: Assignment) -> PoolAssignmentID {
        let slot: Int
        if let reused = free.popLast() {
            slot = reused
        } else {
            slot = slots.count
            slots.append(nil)
            generations.append(0)
        }
        generations[slot] &+= 1
        slots[slot] = assignment
        return PoolAssignmentID(UInt64(slot) << 32 | UInt64(generations[slot]))
    }

    private func slot(of id: PoolAssignmentID) -> Int? {
        let slot = Int(id.rawValue >> 32)
        guard slot < slots.count, generations[slot] == UInt32(truncatingIfNeeded: id.rawValue), slots[slot] != nil else { return nil }
        return slot
    }

    mutating func remove(_ id: PoolAssignmentID) -> Assignment? {
        guard let slot = slot(of: id) else { return nil }
        return take(slot)
    }

    /// Removes the assignment if `worker` holds it; nil (and it stays) otherwise.
    mutating func remove(_ id: PoolAssignmentID, heldBy worker: PoolWorkerID) -> Assignment? {
        guard let slot = slot(of: id), slots[slot]?.worker.id == worker else { return nil }
        return take(slot)
    }

    private mutating func take(_ slot: Int) -> Assignment? {
        defer {
            slots[slot] = nil
            free.append(slot)
        }
        return slots[slot]
    }

    /// The assignments that match, in slot order.
    func all(where matches: (Assignment) -> Bool) -> [(id: PoolAssignmentID, assignment: Assignment)] {
        slots.indices.compactMap { slot in
            guard let assignment = slots[slot], matches(assignment) else { return nil }
            return (PoolAssignmentID(UInt64(slot) << 32 | UInt64(generations[slot])), assignment)
        }
    }
}

struct Assignment {
    let job: Job
    let worker: Worker
    let start: Int
    let count: Int
    let attempt: Int
    /// When it was assigned, and how many assignments its worker held then.
    let assignedAt: UInt64
    let ahead: Int
}

final class Worker {
    let id: PoolWorkerID
    let node: String
    let pid: Int
    let capacity: Int
    let processes: Int
    let tasks: Set<String>
    let taskKeys: Set<Int>
    /// Silence longer than this (three heartbeat intervals) loses the worker.
    let silenceLimit: UInt64
    var lastHeard: UInt64
    /// Assignments it holds now.
    var busy = 0
    var draining = false
    /// It left the pool: its free places still queued are skipped.
    var left = false
    var completedCalls = 0
    /// How long one assignment takes on one of its processes (a moving average), once known.
    private(set) var assignmentNanoseconds: UInt64?
    private(set) var isQuick = false
    /// Prefetch places set aside while it is not quick.
    var withheld = 0

    init(
        id: PoolWorkerID, node: String, pid: Int, capacity: Int, processes: Int, tasks: Set<String>, taskKeys: Set<Int>,
        silenceLimit: UInt64, lastHeard: UInt64
    ) {
        self.id = id
        self.node = node
        self.pid = pid
        self.capacity = capacity
        self.processes = processes
        self.tasks = tasks
        self.taskKeys = taskKeys
        self.silenceLimit = silenceLimit
        self.lastHeard = lastHeard
    }

    var isUsable: Bool { !left && !draining && busy < capacity }

    /// Whether it may take one more assignment: always up to one queued per process, beyond
    /// that only while it is quick.
    var hasRoomToPrefetch: Bool { isQuick || busy < 2 * processes }

    /// Learns from a finished assignment: its time from assignment to report, shared by
    /// the processes among the assignments that were ahead of it.
    func measure(_ assignment: Assignment, now: UInt64, quick: UInt64) {
        let elapsed = now >= assignment.assignedAt ? now - assignment.assignedAt : 0
        let sample = elapsed * UInt64(processes) / UInt64(max(assignment.ahead + 1, processes))
        let average = assignmentNanoseconds.map { ($0 * 3 + sample) / 4 } ?? sample
        assignmentNanoseconds = average
        isQuick = average < quick
    }
}

struct Client {
    var closed = false
    var unfinished = 0
}
