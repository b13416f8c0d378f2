import ColonyPool
import ColonyWire
import Testing

/// Simulated workers around a scheduler: keeps what was assigned to whom, and answers as
/// the tests say.
struct Harness {
    var scheduler: PoolScheduler
    var held: [PoolAssignmentID: (worker: PoolWorkerID, task: String, calls: [WireValue], attempt: Int)] = [:]
    var aborted: Set<PoolAssignmentID> = []
    var ready: Set<PoolJobID> = []
    var idle: Set<PoolClientID> = []
    var disconnected: [PoolWorkerID] = []
    var now: UInt64 = 0

    init(settings: PoolSettings = PoolSettings()) { scheduler = PoolScheduler(settings: settings) }

    mutating func apply(_ actions: [PoolAction]) {
        for action in actions {
            switch action {
            case .assign(let worker, let assignment, let task, let calls, _, let attempt):
                #expect(held[assignment] == nil, "assignment ids are never reused")
                held[assignment] = (worker, task, calls.values, attempt)
            case .abort(_, let assignment): aborted.insert(assignment)
            case .resultsReady(let job): ready.insert(job)
            case .clientIdle(let client): idle.insert(client)
            case .disconnect(let worker, _): disconnected.append(worker)
            }
        }
    }

    mutating func join(_ id: UInt64, capacity: Int = 1, processes: Int? = nil, tasks: Set<String> = ["echo"]) {
        apply(scheduler.workerJoined(
            PoolWorkerID(id), node: "node\(id)", pid: Int(id), capacity: capacity, processes: processes ?? capacity, tasks: tasks, now: now))
    }

    mutating func submit(_ values: [Int], client: UInt64 = 1, chunksize: Int? = nil, ordered: Bool = true, task: String = "echo") throws -> PoolJobID {
        let (job, actions) = try scheduler.submit(
            client: PoolClientID(client), task: task, calls: values.map { .array([.int(Int64($0))]) }, chunksize: chunksize, ordered: ordered)
        apply(actions)
        return job
    }

    func assignments(of worker: UInt64) -> [PoolAssignmentID] {
        held.filter { $0.value.worker == PoolWorkerID(worker) }.keys.sorted { $0.rawValue < $1.rawValue }
    }

    /// The worker answers the assignment: every call echoes its argument.
    mutating func complete(_ assignment: PoolAssignmentID) throws {
        let (worker, _, calls, _) = held.removeValue(forKey: assignment)!
        apply(try scheduler.completed(assignment, by: worker, results: calls.map { $0.arrayValue![0] }))
    }

    mutating func takeAll(_ job: PoolJobID) throws -> [PoolOutcome] {
        try scheduler.take(job).outcomes
    }
}

func values(_ outcomes: [PoolOutcome]) -> [Int] { outcomes.map { Int((try? $0.get())?.int64Value ?? -1) } }

@Suite struct PoolSchedulerTests {
    @Test func aSubmittedCallGoesToAFreeWorkerAndItsResultIsTakenOnce() throws {
        var pool = Harness()
        let job = try pool.submit([7])
        #expect(pool.held.isEmpty, "no worker yet: the call waits")
        pool.join(1)
        #expect(pool.held.count == 1)
        #expect(!pool.scheduler.isFinished(job))
        try pool.complete(pool.assignments(of: 1)[0])
        #expect(pool.ready.contains(job))
        #expect(pool.scheduler.isFinished(job))
        #expect(pool.scheduler.isSuccessful(job) == true)
        let (outcomes, finished) = try pool.scheduler.take(job)
        #expect(values(outcomes) == [7])
        #expect(finished)
        #expect(throws: RemoteError.self) { try pool.scheduler.take(job) }
    }

    @Test func mapUsesPythonsAutomaticChunksizeAndKeepsInputOrder() throws {
        var pool = Harness()
        pool.join(1, capacity: 2)
        // Python: divmod(100, 2 processes * 4) = (12, 4), so 13 per chunk.
        let job = try pool.submit(Array(0..<100))
        #expect(pool.held.count == 2)
        #expect(pool.held.values.allSatisfy { $0.calls.count == 13 })
        // Answer the later chunk first: nothing is ready until the first one is in.
        let assigned = pool.assignments(of: 1)
        try pool.complete(assigned[1])
        #expect(!pool.scheduler.hasReady(job))
        try pool.complete(assigned[0])
        var taken: [Int] = []
        while !pool.held.isEmpty {
            try pool.complete(pool.held.keys.min { $0.rawValue < $1.rawValue }!)
            taken += values(try pool.scheduler.take(job, limit: 5).outcomes)
        }
        let (rest, finished) = try pool.scheduler.take(job)
        #expect(taken + values(rest) == Array(0..<100))
        #expect(finished)
    }

    /// Thousands of calls, answered out of order and taken a few at a time: the job drops the
    /// arguments and results it handed out as it goes, and every result still comes once, in
    /// order (ordered) or as each finished (unordered).
    @Test(arguments: [true, false]) func longJobsDropWhatTheyHandedOutAndKeepEveryResult(ordered: Bool) throws {
        var pool = Harness()
        pool.join(1, capacity: 3)
        let count = 20_000
        let job = try pool.submit(Array(0..<count), chunksize: 7, ordered: ordered)
        var rng = SystemRandomNumberGenerator()
        var taken: [Int] = []
        var finished = false
        while !finished {
            if let assignment = pool.held.keys.randomElement(using: &rng) { try pool.complete(assignment) }
            let (outcomes, done) = try pool.scheduler.take(job, limit: Int.random(in: 1...50, using: &rng))
            taken += values(outcomes)
            finished = done
        }
        #expect(pool.held.isEmpty)
        #expect(ordered ? taken == Array(0..<count) : taken.sorted() == Array(0..<count))
    }

    @Test func imapUnorderedHandsOutResultsInCompletionOrder() throws {
        var pool = Harness()
        pool.join(1, capacity: 3)
        let job = try pool.submit([10, 20, 30], chunksize: 1, ordered: false)
        let assigned = pool.assignments(of: 1)
        try pool.complete(assigned[2])
        try pool.complete(assigned[0])
        #expect(values(try pool.scheduler.take(job).outcomes) == [30, 10])
        try pool.complete(assigned[1])
        let (last, finished) = try pool.scheduler.take(job)
        #expect(values(last) == [20])
        #expect(finished)
    }

    @Test func eachJobsProgressCountsItsCallsDoneFailedAndRetried() throws {
        var pool = Harness()
        pool.join(1, capacity: 4)
        let job = try pool.submit([1, 2, 3, 4], chunksize: 1)
        let assigned = pool.assignments(of: 1)
        try pool.complete(assigned[0])
        pool.held = [:]
        pool.apply(pool.scheduler.workerLeft(PoolWorkerID(1)))
        let row = try #require(pool.scheduler.jobRows.first)
        #expect(pool.scheduler.jobRows.count == 1)
        #expect(row.id == job && row.task == "echo" && row.inputComplete)
        #expect((row.completed, row.received, row.failed, row.retried) == (1, 4, 0, 3))
    }

    @Test func aLostWorkersCallsRunAgainOneByOneWithOneMoreAttempt() throws {
        var pool = Harness()
        pool.join(1)
        let job = try pool.submit([1, 2, 3], chunksize: 3)
        #expect(pool.held.values.first?.calls.count == 3)
        pool.held = [:]
        pool.apply(pool.scheduler.workerLeft(PoolWorkerID(1)))
        pool.join(2, capacity: 3)
        #expect(pool.held.count == 3)
        #expect(pool.held.values.allSatisfy { $0.calls.count == 1 && $0.attempt == 2 })
        for assignment in pool.assignments(of: 2) { try pool.complete(assignment) }
        #expect(values(try pool.takeAll(job)) == [1, 2, 3])
        #expect(pool.scheduler.counters.retriedCalls == 3)
        #expect(pool.scheduler.jobRows.isEmpty)  // taken in full
    }

    @Test func aCallThatKeepsKillingItsWorkerFailsWithWorkerLostAndTheRestComplete() throws {
        var pool = Harness(settings: PoolSettings(maxAttempts: 3))
        pool.join(1, capacity: 2)
        let job = try pool.submit([1, 666, 3, 4], chunksize: 2)
        // The process dies on 666 (index 1 of the first chunk) every time it runs.
        var deaths = 0
        while !pool.held.isEmpty {
            let assignment = pool.held.keys.min { $0.rawValue < $1.rawValue }!
            let (worker, _, calls, _) = pool.held[assignment]!
            if let poison = calls.firstIndex(of: .array([.int(666)])) {
                pool.held[assignment] = nil
                deaths += 1
                pool.apply(try pool.scheduler.lost(assignment, by: worker, index: poison, results: calls[..<poison].map { $0.arrayValue![0] }))
            } else {
                try pool.complete(assignment)
            }
        }
        #expect(deaths == 3)
        let outcomes = try pool.takeAll(job)
        #expect(values([outcomes[0], outcomes[2], outcomes[3]]) == [1, 3, 4])
        guard case .failure(let error) = outcomes[1] else {
            Issue.record("the poison call succeeded")
            return
        }
        #expect(error.code == .workerLost)
        #expect(pool.scheduler.isSuccessful(job) == nil, "taken in full, so forgotten")
    }

    @Test func aProcessDeathMidChunkBlamesOnlyTheCallThatWasRunning() throws {
        var pool = Harness()
        pool.join(1, capacity: 4)
        let job = try pool.submit([0, 1, 2, 3], chunksize: 4)
        let assignment = pool.assignments(of: 1)[0]
        pool.held[assignment] = nil
        // Call 2 was running when the process died; the results of 0 and 1 died with it.
        pool.apply(try pool.scheduler.lost(assignment, by: PoolWorkerID(1), index: 2, results: []))
        let retried = pool.held.values.map { ($0.calls, $0.attempt) }.sorted { $0.0.count > $1.0.count || ($0.0.count == $1.0.count && $0.1 < $1.1) }
        #expect(retried.map(\.0) == [[.array([.int(0)]), .array([.int(1)])], [.array([.int(3)])], [.array([.int(2)])]])
        #expect(retried.map(\.1) == [1, 1, 2])
        for assignment in pool.assignments(of: 1) { try pool.complete(assignment) }
        #expect(values(try pool.takeAll(job)) == [0, 1, 2, 3])
    }

    @Test func aTasksErrorFailsThatCallOnlyAndTheChunksRestRunsAgain() throws {
        var pool = Harness()
        pool.join(1)
        let job = try pool.submit([1, 2, 3], chunksize: 3)
        let assignment = pool.assignments(of: 1)[0]
        pool.held[assignment] = nil
        let error = RemoteError(.taskFailed, "boom", detail: ["type": "Boom", "message": "boom"])
        pool.apply(try pool.scheduler.failed(assignment, by: PoolWorkerID(1), index: 1, results: [.int(1)], error: error))
        #expect(pool.held.values.first?.calls == [.array([.int(3)])])
        #expect(pool.held.values.first?.attempt == 1, "a task's own error is not the worker's fault")
        try pool.complete(pool.assignments(of: 1)[0])
        let outcomes = try pool.takeAll(job)
        #expect(outcomes.count == 3)
        #expect(try outcomes[0].get() == .int(1))
        #expect(outcomes[1] == .failure(error))
        #expect(try outcomes[2].get() == .int(3))
    }

    @Test func workSpreadsOverEveryNodesProcessesBeforeFillingAnyPrefetch() throws {
        var pool = Harness()
        pool.join(1, capacity: 8, processes: 2)
        pool.join(2, capacity: 8, processes: 2)
        _ = try pool.submit([1, 2, 3, 4], chunksize: 1)
        #expect(pool.assignments(of: 1).count == 2)
        #expect(pool.assignments(of: 2).count == 2)
        _ = try pool.submit([5, 6], chunksize: 1)
        #expect(pool.held.count == 6, "then prefetch places take the rest")
    }

    @Test func prefetchBeyondOneWaitingPerProcessIsUsedOnlyWhileAssignmentsAreQuick() throws {
        var pool = Harness()
        pool.join(1, capacity: 16, processes: 2)
        _ = try pool.submit(Array(0..<100), chunksize: 1)
        #expect(pool.held.count == 4, "not measured yet: one waiting per process")
        // Quick: each assignment reports 100 µs after it was given.
        for _ in 0..<8 {
            pool.scheduler.advanceClock(to: pool.scheduler.clock + 100_000)
            try pool.complete(pool.assignments(of: 1)[0])
        }
        #expect(pool.held.count == 16, "quick: every prefetch place is used")
        // Slow: 50 ms each, shared by 2 processes among 16 held is still 6 ms per assignment.
        for _ in 0..<16 {
            pool.scheduler.advanceClock(to: pool.scheduler.clock + 50_000_000)
            try pool.complete(pool.assignments(of: 1)[0])
        }
        #expect(pool.held.count == 4, "slow: back to one waiting per process")
        // Quick again: once the moving average has forgotten the slow ones, the places set
        // aside come back.
        var rounds = 0
        while pool.held.count < 16, rounds < 40 {
            pool.scheduler.advanceClock(to: pool.scheduler.clock + 10_000)
            try pool.complete(pool.assignments(of: 1)[0])
            rounds += 1
        }
        #expect(pool.held.count == 16)
        #expect(rounds > 1, "one quick report does not undo a slow average")
    }

    @Test func aSmallApplyIsNotStuckBehindAHugeMapOfAnotherClient() throws {
        var pool = Harness()
        pool.join(1)
        let big = try pool.submit(Array(0..<10_000), client: 1, chunksize: 10)
        let small = try pool.submit([42], client: 2)
        // The map's next chunk was already in turn when the apply came; the apply runs
        // right after it, not after the other 998 chunks.
        try pool.complete(pool.assignments(of: 1)[0])
        try pool.complete(pool.assignments(of: 1)[0])
        #expect(pool.held.values.first?.calls == [.array([.int(42)])])
        try pool.complete(pool.assignments(of: 1)[0])
        #expect(values(try pool.takeAll(small)) == [42])
        #expect(!pool.scheduler.isFinished(big))
    }

    @Test func aSilentWorkerIsLostAfterThreeHeartbeatIntervals() throws {
        var pool = Harness(settings: PoolSettings(heartbeatInterval: .seconds(5)))
        pool.join(1)
        pool.join(2)
        _ = try pool.submit([1, 2], chunksize: 1)
        pool.scheduler.heard(from: PoolWorkerID(2), now: 14_000_000_000)
        pool.apply(pool.scheduler.tick(now: 14_000_000_000))
        #expect(pool.disconnected.isEmpty)
        pool.apply(pool.scheduler.tick(now: 15_000_000_001))
        #expect(pool.disconnected == [PoolWorkerID(1)])
        #expect(pool.scheduler.workerCount == 1)
        #expect(pool.scheduler.load.queued == 1, "worker 1's call went back to the queue; worker 2 takes it when free")
    }

    @Test func unknownTasksAndAnswersForAssignmentsAWorkerDoesNotHoldAreRefused() throws {
        var pool = Harness()
        pool.join(1)
        let refused = #expect(throws: RemoteError.self) { try pool.submit([1], task: "nope") }
        #expect(refused?.code == .noSuchTask)
        let job = try pool.submit([5])
        let assignment = pool.assignments(of: 1)[0]
        #expect(throws: RemoteError.self) { try pool.scheduler.completed(assignment, by: PoolWorkerID(9), results: [.int(5)]) }
        #expect(throws: RemoteError.self) { try pool.scheduler.completed(PoolAssignmentID(999), by: PoolWorkerID(1), results: []) }
        try pool.complete(assignment)
        #expect(values(try pool.takeAll(job)) == [5])
    }

    @Test func aWrongNumberOfResultsIsRefusedAndTheCallsRunAgain() throws {
        var pool = Harness()
        pool.join(1)
        let job = try pool.submit([1, 2], chunksize: 2)
        let assignment = pool.assignments(of: 1)[0]
        pool.held[assignment] = nil
        #expect(throws: RemoteError.self) { try pool.scheduler.completed(assignment, by: PoolWorkerID(1), results: [.int(1)]) }
        #expect(pool.scheduler.load.queued + pool.scheduler.load.running == 2)
        pool.apply(pool.scheduler.workerLeft(PoolWorkerID(1)))
        pool.join(2, capacity: 2)
        for assignment in pool.assignments(of: 2) { try pool.complete(assignment) }
        #expect(values(try pool.takeAll(job)) == [1, 2])
    }

    @Test func terminateAbortsRunningCallsAndJoinWaitsForTheClientsJobs() throws {
        var pool = Harness()
        pool.join(1)
        let job = try pool.submit([1, 2, 3], chunksize: 1)
        let running = pool.assignments(of: 1)[0]
        #expect(!pool.scheduler.isIdle(PoolClientID(1)))
        pool.apply(pool.scheduler.terminate(client: PoolClientID(1)))
        #expect(pool.aborted == [running])
        #expect(pool.idle.contains(PoolClientID(1)))
        #expect(throws: RemoteError.self) { try pool.submit([4]) }
        let outcomes = try pool.takeAll(job)
        #expect(outcomes.allSatisfy { if case .failure(let error) = $0 { error.code == .cancelled } else { false } })
        // The aborted assignment's late answer is accepted and ignored; its place frees.
        try pool.complete(running)
        #expect(pool.scheduler.load.running == 0)
    }

    @Test func aGoneClientsQueuedWorkIsDroppedAndOthersCarryOn() throws {
        var pool = Harness()
        pool.join(1)
        _ = try pool.submit(Array(0..<100), client: 1, chunksize: 1)
        let other = try pool.submit([9], client: 2)
        pool.apply(pool.scheduler.clientGone(PoolClientID(1)))
        #expect(pool.scheduler.load.queued == 1)
        try pool.complete(pool.assignments(of: 1)[0])  // client 1's running call: ignored
        try pool.complete(pool.assignments(of: 1)[0])
        #expect(values(try pool.takeAll(other)) == [9])
    }

    @Test func aLostClientsJobsRunOnAndCanBeAdoptedUntilTheirDeadline() throws {
        var pool = Harness()
        pool.join(1)
        let kept = try pool.submit([1, 2], client: 1, chunksize: 1)
        let dropped = try pool.submit([3], client: 1, chunksize: 1)
        pool.scheduler.clientLost(PoolClientID(1), keepUntil: 100)
        #expect(throws: RemoteError.self) { try pool.scheduler.adopt(PoolJobID(99), by: PoolClientID(2)) }
        try pool.scheduler.adopt(kept, by: PoolClientID(2))
        #expect(throws: RemoteError.self) { try pool.scheduler.adopt(kept, by: PoolClientID(3)) }
        #expect(pool.scheduler.owner(of: kept) == PoolClientID(2))
        while let assignment = pool.held.keys.min(by: { $0.rawValue < $1.rawValue }) { try pool.complete(assignment) }
        #expect(pool.scheduler.isFinished(dropped))
        pool.apply(pool.scheduler.tick(now: 100))
        #expect(!pool.scheduler.exists(dropped), "unadopted past its deadline: dropped")
        #expect(values(try pool.takeAll(kept)) == [1, 2])
        #expect(pool.scheduler.isIdle(PoolClientID(2)))
    }

    @Test func streamedInputWaitsForAFullChunkUntilItEnds() throws {
        var pool = Harness()
        pool.join(1, capacity: 4)
        let (job, actions) = try pool.scheduler.submit(
            client: PoolClientID(1), task: "echo", calls: [.array([.int(1)])], chunksize: 2, ordered: true, moreInput: true)
        pool.apply(actions)
        #expect(pool.held.isEmpty)
        pool.apply(try pool.scheduler.feed(job, calls: [.array([.int(2)]), .array([.int(3)])], last: false))
        #expect(pool.held.count == 1)
        #expect(pool.scheduler.progress(job)! == (0, nil))
        pool.apply(try pool.scheduler.feed(job, calls: [], last: true))
        #expect(pool.held.count == 2)
        for assignment in pool.assignments(of: 1) { try pool.complete(assignment) }
        #expect(pool.scheduler.progress(job)! == (3, 3))
        #expect(values(try pool.takeAll(job)) == [1, 2, 3])
    }

    /// A long map sent in pieces: with its total given, the automatic chunk size is the one
    /// the whole input would get, and the first chunks run while the rest is on its way.
    @Test func aStreamedInputWithItsTotalGetsTheAutomaticChunksize() throws {
        var pool = Harness()
        pool.join(1, capacity: 4, processes: 2)
        let calls = (0..<100).map { WireValue.array([.int($0)]) }
        #expect(throws: RemoteError.self) {
            try pool.scheduler.submit(
                client: PoolClientID(1), task: "echo", calls: calls, chunksize: nil, ordered: true, moreInput: true, total: 99)
        }
        // Python: divmod(100, 2 processes * 4) = (12, 4), so 13 per chunk.
        let (job, actions) = try pool.scheduler.submit(
            client: PoolClientID(1), task: "echo", calls: Array(calls[0..<30]), chunksize: nil, ordered: true, moreInput: true, total: 100)
        pool.apply(actions)
        #expect(pool.held.values.map(\.calls.count) == [13, 13], "two full chunks of the first 30 calls run; 4 wait for more")
        pool.apply(try pool.scheduler.feed(job, calls: Array(calls[30...]), last: true))
        var taken: [Int] = []
        var finished = false
        while !finished {
            if let assignment = pool.held.keys.min(by: { $0.rawValue < $1.rawValue }) { try pool.complete(assignment) }
            let (outcomes, done) = try pool.scheduler.take(job)
            taken += values(outcomes)
            finished = done
        }
        #expect(taken == Array(0..<100))
    }

    @Test func aJobWhoseTaskNoRemainingWorkerHasFailsWithNoSuchTask() throws {
        var pool = Harness()
        pool.join(1, tasks: ["echo", "rare"])
        pool.join(2, tasks: ["echo"])
        let job = try pool.submit([1, 2], chunksize: 1, task: "rare")
        pool.held = [:]
        pool.apply(pool.scheduler.workerLeft(PoolWorkerID(1)))
        let outcomes = try pool.takeAll(job)
        #expect(outcomes.count == 2)
        #expect(outcomes.allSatisfy { if case .failure(let error) = $0 { [.noSuchTask, .workerLost].contains(error.code) } else { false } })
    }

    /// Workers join, die, fail calls and answer in random order; clients cancel some jobs.
    /// Every call's outcome must be handed out exactly once, in input order for ordered
    /// jobs, and with one steady worker at the end, everything finishes.
    @Test(arguments: 0..<40) func randomJoinsLossesFailuresAndCancelsDeliverEveryResultOnce(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        var pool = Harness(settings: PoolSettings(maxAttempts: 3))
        var nextWorker: UInt64 = 1
        var jobs: [(id: PoolJobID, count: Int, ordered: Bool)] = []
        var taken: [PoolJobID: [PoolOutcome]] = [:]
        var finished: Set<PoolJobID> = []
        var cancelled: Set<PoolJobID> = []
        for _ in 0..<2 {
            pool.join(nextWorker, capacity: Int.random(in: 1...3, using: &rng))
            nextWorker += 1
        }
        for step in 0..<400 {
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<10 where jobs.count < 12:
                let count = Int.random(in: 1...40, using: &rng)
                let ordered = Bool.random(using: &rng)
                let chunksize = Bool.random(using: &rng) ? nil : Int.random(in: 1...5, using: &rng)
                let job = try pool.submit(Array(0..<count), client: UInt64.random(in: 1...3, using: &rng), chunksize: chunksize, ordered: ordered)
                jobs.append((job, count, ordered))
            case 10..<14:
                pool.join(nextWorker, capacity: Int.random(in: 1...3, using: &rng))
                nextWorker += 1
            case 14..<18 where pool.scheduler.workerCount > 1:
                let victim = pool.held.values.map(\.worker).randomElement(using: &rng) ?? PoolWorkerID(nextWorker - 1)
                pool.held = pool.held.filter { $0.value.worker != victim }
                pool.apply(pool.scheduler.workerLeft(victim))
            case 18..<20:
                if let job = jobs.randomElement(using: &rng), !finished.contains(job.id), pool.scheduler.cancel(job.id).cancelled {
                    cancelled.insert(job.id)
                }
            case 20..<30:
                if let job = jobs.randomElement(using: &rng), !finished.contains(job.id) {
                    let (outcomes, done) = try pool.scheduler.take(job.id, limit: Int.random(in: 1...10, using: &rng))
                    taken[job.id, default: []] += outcomes
                    if done { finished.insert(job.id) }
                }
            default:
                guard let assignment = pool.held.keys.randomElement(using: &rng) else { continue }
                let (worker, _, calls, _) = pool.held.removeValue(forKey: assignment)!
                let results = calls.map { $0.arrayValue![0] }
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    let index = Int.random(in: 0..<calls.count, using: &rng)
                    pool.apply(try pool.scheduler.lost(assignment, by: worker, index: index, results: Array(results[..<index])))
                case 1:
                    let index = Int.random(in: 0..<calls.count, using: &rng)
                    let error = RemoteError(.taskFailed, "failed at step \(step)")
                    pool.apply(try pool.scheduler.failed(assignment, by: worker, index: index, results: Array(results[..<index]), error: error))
                default:
                    pool.apply(try pool.scheduler.completed(assignment, by: worker, results: results))
                }
            }
        }
        // The end: one steady worker answers everything; every job finishes.
        pool.join(nextWorker, capacity: 2)
        var rounds = 0
        while let assignment = pool.held.keys.min(by: { $0.rawValue < $1.rawValue }) {
            rounds += 1
            #expect(rounds < 100_000, "the pool must not keep handing out work forever")
            if rounds >= 100_000 { return }
            try pool.complete(assignment)
        }
        for job in jobs where !finished.contains(job.id) {
            let (outcomes, done) = try pool.scheduler.take(job.id)
            taken[job.id, default: []] += outcomes
            #expect(done, "\(job.id) must finish")
        }
        for job in jobs {
            let outcomes = taken[job.id] ?? []
            #expect(outcomes.count == job.count, "\(job.id): every call's outcome exactly once")
            let succeeded = outcomes.compactMap { try? $0.get().int64Value }.map(Int.init)
            #expect(Set(succeeded).count == succeeded.count, "\(job.id): no result twice")
            if job.ordered && !cancelled.contains(job.id) {
                // Results in input order: each success is the call's own argument, at its place.
                for (index, outcome) in outcomes.enumerated() {
                    if case .success(let value) = outcome { #expect(value == .int(Int64(index))) }
                }
            }
        }
        #expect(pool.scheduler.load == (0, 0, 0))
    }
}


/// A small deterministic random generator for reproducible tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
