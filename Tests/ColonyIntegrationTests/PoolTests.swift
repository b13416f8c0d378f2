import Colony
import ColonyWorker
import Foundation
import Testing

let echo = PoolTask<Int, Int>("echo")
let sleepTask = PoolTask<Double, Double>("sleep")
let failTask = PoolTask<String, Bool>("fail")
let pidTask = PoolTask<Int, Int32>("pid")
let exitTask = PoolTask<Int32, Int32>("exit")
let sha256Task = PoolTask<String, String>("sha256")

@Suite(.serialized) struct PoolIntegrationTests {
    @Test func everyPoolCallRunsOnARealWorkerNode() async throws {
        let (_, worker, client, pool) = try await startPool(["--threads", "2", "--node", "threads-node"])
        let nodes = try await pool.workers()
        #expect(nodes.first?.node == "threads-node")
        #expect(nodes.first?.processes == 2)
        #expect(nodes.first?.tasks.contains("exec") == true)

        #expect(try await pool.apply(echo, 41) == 41)
        #expect(try await pool.apply(sha256Task, "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let called = Threading.Event()
        let async = try await pool.applyAsync(echo, 7, callback: { value in if value == 7 { called.set() } })
        #expect(try await async.get(timeout: 10) == 7)
        #expect(called.wait(timeout: 10))
        #expect(async.isReady)
        #expect(try async.successful())

        #expect(try await pool.map(echo, 0..<1000) == Array(0..<1000))
        // A long input goes in pieces (a first request with its total, then feeds).
        #expect(try await pool.map(echo, 0..<50_000) == Array(0..<50_000))
        #expect(try await pool.starmap(PoolTask<[Int], [Int]>("echo"), (0..<40_000).map { [$0, -$0] }).last == [39_999, -39_999])
        #expect(try await pool.map(echo, 0..<10, chunksize: 3) == Array(0..<10))
        let mapped = try await pool.mapAsync(echo, [3, 2, 1])
        #expect(try await mapped.get() == [3, 2, 1])
        #expect(try await pool.starmap(echo, [[5], [6]]) == [5, 6])
        // Strings and doubles take the integers' short way, there and back.
        let texts = ["a", "é", String(repeating: "z", count: 40)]
        #expect(try await pool.map(PoolTask<String, String>("echo"), texts) == texts)
        #expect(try await pool.map(PoolTask<Double, Double>("echo"), [0.5, -2]) == [0.5, -2])
        // A refused map, whole or in pieces sent without waiting, throws the refusal.
        for count in [10, 40_000] {
            do {
                _ = try await pool.map(PoolTask<Int, Int>("no-such-task"), 0..<count)
                Issue.record("a map of an unknown task ran")
            } catch let error as PoolError {
                #expect(error.code == .noSuchTask)
            }
        }

        let ordered = try pool.imap(echo, 0..<3000, chunksize: 7)
        var seen: [Int] = []
        for try await value in ordered { seen.append(value) }
        #expect(seen == Array(0..<3000))
        #expect(ordered.progress.completed == 3000)
        #expect(ordered.progress.total == 3000)
        let unordered = try pool.imapUnordered(echo, 0..<500)
        #expect(try await unordered.collect().sorted() == Array(0..<500))
        // Made and iterated in a task on the connection's own event loop (Manager.executor):
        // making an iterator never waits for the manager.
        let onLoop = try await withTaskExecutorPreference(client.executor) {
            let iterator = try pool.imapUnordered(echo, 0..<2000)
            #expect(throws: ConnectionError.self) { try iterator.next(timeout: 1) }
            return try await iterator.collect().sorted()
        }
        #expect(onLoop == Array(0..<2000))

        // Errors arrive typed, at the call that failed; the rest of a map is unaffected.
        await #expect(throws: PoolError.self) { try await pool.apply(failTask, "no luck") }
        do {
            _ = try await pool.apply(failTask, "no luck")
        } catch let error as PoolError {
            #expect(error.code == .taskFailed)
            #expect(error.errorType == "StockTaskFailure")
            #expect(error.message == "no luck")
            #expect(error.node == "threads-node")
        }
        do {
            _ = try await pool.apply(PoolTask<Int, Int>("no-such-task"), 1)
            Issue.record("an unknown task ran")
        } catch let error as PoolError {
            #expect(error.code == .noSuchTask)
        }
        do {
            _ = try await pool.apply(PoolTask<[String: Int], Double>("sleep"), ["not": 1])
            Issue.record("arguments of the wrong type ran")
        } catch let error as PoolError {
            #expect(error.code == .taskFailed)
            #expect(error.message.contains("do not decode"))
        }

        // A timeout leaves the call running; its result can be had later. (Long enough that a
        // loaded machine still checks it before it ends.)
        let slow = try await pool.applyAsync(sleepTask, 5)
        await #expect(throws: TimeoutError.self) { try await slow.get(timeout: 0.05) }
        #expect(await slow.wait(timeout: 0.01) == false)
        #expect(throws: ThreadingError.self) { try slow.successful() }
        #expect(await slow.wait(timeout: 10))
        #expect(try await slow.get(timeout: 10) == 5)
        let starred = try await pool.starmapAsync(PoolTask<[Int], [Int]>("echo"), [[1, 2], [3, 4]])
        #expect(try await starred.get(timeout: 10) == [[1, 2], [3, 4]])
        let failing = try await pool.mapAsync(failTask, ["a", "b"])
        #expect(await failing.wait(timeout: 10))
        #expect(try failing.successful() == false)

        // exec runs a real command on the worker node.
        let exec = try await pool.apply(ExecTask.task, ExecRequest(["/bin/sh", "-c", "echo $GREETING; cat; exit 3"], environment: ["GREETING": "hi"], standardInput: "in"))
        #expect(exec.status == 3)
        #expect(exec.standardOutput == "hi\nin")
        let stopped = try await pool.apply(ExecTask.task, ExecRequest(["sleep", "30"], timeout: 0.2))
        #expect(stopped.timedOut)

        try await pool.close()
        #expect(try await pool.join(timeout: 10))
        await #expect(throws: RemoteError.self) { try await pool.apply(echo, 1) }
        await client.close()
        #expect(worker.stop() == 0, "a drained worker exits cleanly: \(worker.log)")
    }

    @Test func blockingFacesWorkOnPlainThreads() async throws {
        let (_, worker, client, pool) = try await startPool(["--threads", "2"])
        let outcome = Future<[Int]>()
        let thread = Threading.Thread {
            do {
                var results = [try pool.apply(echo, 1)]
                results += try pool.map(echo, [2, 3])
                guard try pool.map(echo, 0..<40_000) == Array(0..<40_000) else { throw TaskError("a long map in pieces lost its order") }
                let iterator = try pool.imap(echo, [4, 5])
                while let value = try iterator.next(timeout: 10) { results.append(value) }
                try outcome.setResult(results)
            } catch {
                try? outcome.setException(error)
            }
        }
        try thread.start()
        #expect(try await outcome.value == [1, 2, 3, 4, 5])
        try thread.join()
        await client.close()
        worker.stop()
    }
}

@Suite(.serialized) struct PoolCrashTests {
    @Test func killingAWorkerProcessMidMapStillGivesEveryResultOnceAndInOrder() async throws {
        // One call per assignment, and the node holds the next assignment while the process
        // runs one (prefetch 2): once two calls are done, the process is inside a call of
        // 0.25 s, with seconds of work left however late a loaded machine lets this test see
        // it. Between two calls it only takes the next from the node's pipe; with prefetch 1
        // it waited a round trip to the manager there, and under ThreadSanitizer a kill once
        // landed in that wait (no call running, so none retried).
        let (_, worker, client, pool) = try await startPool(["--processes", "1", "--prefetch", "2"])
        // Distinct durations, so the results show their order.
        let inputs = (0..<30).map { 0.25 + Double($0) * 1e-6 }
        let map = try await pool.mapAsync(sleepTask, inputs, chunksize: 1)
        #expect(try await eventually { try await pool.workers().first?.done ?? 0 >= 2 })
        let victims = worker.children
        #expect(victims.count == 1, "\(worker.log)")
        for victim in victims { kill(victim, SIGKILL) }
        #expect(try await map.get(timeout: 60) == inputs)
        #expect(await eventually { worker.children.count == 1 && worker.children != victims }, "a new process replaces the dead one")
        #expect(try await client.status()["pools"]?.arrayValue?.first?["retried"]?.int64Value ?? 0 >= 1)
        await client.close()
        worker.stop()
    }

    @Test func anIdleWorkerProcessThatDiesIsReplacedAtOnceAndNoCallIsRetried() async throws {
        let (_, worker, client, pool) = try await startPool(["--processes", "1"])
        let first = try await pool.apply(pidTask, 0)
        #expect(worker.children == [first], "\(worker.log)")
        kill(first, SIGKILL)
        // Seen as the end of its pipe, before any work is handed to it.
        #expect(await eventually { worker.children.count == 1 && worker.children != [first] }, "\(worker.log)")
        let second = try await pool.apply(pidTask, 0)
        #expect(second != first && worker.children == [second])
        #expect(try await client.status()["pools"]?.arrayValue?.first?["retried"]?.int64Value == 0)
        await client.close()
        worker.stop()
    }

    @Test func aCallThatKeepsKillingItsWorkerFailsWithWorkerLostAndTheRestComplete() async throws {
        let (_, worker, client, pool) = try await startPool(["--processes", "2", "--pool", "crashy"], "crashy", maxAttempts: 3)
        let iterator = try pool.imap(exitTask, [0, 0, 9, 0, 0], chunksize: 2)
        var outcomes: [Result<Int32, any Error>] = []
        while true {
            do {
                guard let value = try await iterator.next() else { break }
                outcomes.append(.success(value))
            } catch {
                outcomes.append(.failure(error))
            }
        }
        #expect(outcomes.count == 5)
        for (index, outcome) in outcomes.enumerated() {
            switch (index, outcome) {
            case (2, .failure(let error as PoolError)): #expect(error.code == .workerLost)
            case (2, _): Issue.record("the poison call gave \(outcome)")
            case (_, .success(let value)): #expect(value == 0)
            case (_, .failure(let error)): Issue.record("call \(index) failed: \(error)")
            }
        }
        await client.close()
        worker.stop()
    }

    @Test func maxtasksperchildReplacesWorkerProcesses() async throws {
        let (_, worker, client, pool) = try await startPool(["--processes", "1", "--maxtasksperchild", "2"])
        let pids = try await pool.map(pidTask, 0..<6, chunksize: 1)
        #expect(Set(pids).count == 3, "6 calls, 2 per process: \(pids)")
        await client.close()
        worker.stop()
    }

    @Test func terminateStopsRunningTasks() async throws {
        let (manager, worker, client, pool) = try await startPool(["--processes", "1"])
        let before = worker.children
        #expect(before.count == 1, "\(worker.log)")
        // A call whose start shows: the worker process's own child, `sleep`. (Busy on the
        // manager is not enough: the call may still be on its way to the worker process, and
        // a call cancelled there never starts.)
        let long = try await pool.applyAsync(ExecTask.task, ExecRequest(["sleep", "60"]))
        func sleeping() -> [Int32] { before.flatMap(childProcesses(of:)).filter { processName($0) == "sleep" } }
        #expect(await eventually { !sleeping().isEmpty }, "\(worker.log)")
        let orphans = sleeping()
        defer { for orphan in orphans { kill(orphan, SIGKILL) } }
        try await pool.terminate()
        await #expect(throws: CancelledError.self) { try await long.get(timeout: 20) }
        #expect(try await pool.join(timeout: 20))
        // The process running the call was killed and replaced; the node serves on.
        #expect(await eventually { worker.children.count == 1 && worker.children != before }, "before \(before), now \(worker.children): \(worker.log)")
        await client.close()
        let again = try await manager.connect()
        #expect(try await again.pool().apply(echo, 5) == 5)
        await again.close()
        worker.stop()
    }

    /// `apply` is one parked request: cancelling the task that waits on it cancels the call,
    /// which stops on its worker and leaves no job behind.
    @Test func cancellingAnApplyStopsItsCall() async throws {
        let (_, worker, client, pool) = try await startPool(["--processes", "1"])
        let before = worker.children
        let long = Task { try await pool.apply(ExecTask.task, ExecRequest(["sleep", "60"])) }
        func sleeping() -> [Int32] { before.flatMap(childProcesses(of:)).filter { processName($0) == "sleep" } }
        #expect(await eventually { !sleeping().isEmpty }, "\(worker.log)")
        let orphans = sleeping()
        defer { for orphan in orphans { kill(orphan, SIGKILL) } }
        long.cancel()
        await #expect(throws: CancelledError.self) { try await long.value }
        try await pool.close()
        #expect(try await pool.join(timeout: 20), "no job of this client is left")
        #expect(await eventually { worker.children.count == 1 && worker.children != before }, "before \(before), now \(worker.children): \(worker.log)")
        await client.close()
        worker.stop()
    }

    @Test func aNodeThatJoinsDuringAMapGetsWorkAndAKilledNodesCallsRunElsewhere() async throws {
        let (manager, first, client, pool) = try await startPool(["--threads", "1", "--node", "first"])
        // Distinct durations, so the results show their order.
        let inputs = (0..<80).map { 0.05 + Double($0) * 1e-6 }
        let map = try await pool.mapAsync(sleepTask, inputs, chunksize: 1)
        let second = try WorkerProcess(manager: manager, arguments: ["--threads", "2", "--node", "second"])
        #expect(try await eventually(30) { try await pool.workers().first { $0.node == "second" }.map { $0.done > 0 } ?? false })
        // SIGKILL the first node in the middle: its calls run again on the second.
        first.signal(SIGKILL)
        #expect(try await map.get(timeout: 60) == inputs, "every result once, in input order")
        await client.close()
        second.stop()
        first.stop()
    }

    @Test func aFrozenNodeIsLostAfterThreeSilentHeartbeatsAndRejoinsWhenItWakes() async throws {
        let (manager, frozen, client, pool) = try await startPool(["--threads", "1", "--node", "frozen", "--heartbeat", "0.3"])
        let healthy = try WorkerProcess(manager: manager, arguments: ["--threads", "1", "--node", "healthy"])
        try await waitForWorkers(pool, 2)
        let map = try await pool.mapAsync(sleepTask, Array(repeating: 0.1, count: 30), chunksize: 1)
        #expect(try await eventually { try await pool.workers().first { $0.node == "frozen" }?.busy ?? 0 > 0 })
        frozen.signal(SIGSTOP)  // alive to the kernel, silent to the manager
        #expect(try await map.get(timeout: 60).count == 30, "the frozen node's calls ran on the healthy one")
        #expect(try await eventually { try await !pool.workers().contains { $0.node == "frozen" } })
        frozen.signal(SIGCONT)  // it finds its connection closed, and joins again
        #expect(try await eventually(30) { try await pool.workers().contains { $0.node == "frozen" } }, "\(frozen.log)")
        #expect(try await pool.map(echo, 0..<20, chunksize: 1) == Array(0..<20))
        await client.close()
        healthy.stop()
        frozen.stop()
    }

    @Test func aNodeReconnectsWhenItsManagerRestartsAndIsGivenFreshWork() async throws {
        let (first, worker, client, pool) = try await startPool(["--threads", "1", "--node", "steady"])
        #expect(try await pool.apply(echo, 1) == 1)
        await client.close()
        first.stop()
        // The same address and state directory, as a restarted manager has.
        let second = try ManagerProcess(extraArguments: ["--port", String(first.port)], stateDirectory: first.stateDirectory)
        #expect(second.port == first.port)
        let again = try await second.connect()
        let rejoined = try await again.pool()
        #expect(try await eventually(30) { try await !rejoined.workers().isEmpty }, "the node did not come back: \(worker.log)")
        #expect(try await rejoined.workers().first?.node == "steady")
        #expect(try await rejoined.map(echo, 0..<10, chunksize: 1) == Array(0..<10))
        await again.close()
        worker.stop()
        second.stop()
    }

    @Test func aDrainedNodeFinishesItsCallsAndLeaves() async throws {
        let (_, worker, client, pool) = try await startPool(["--threads", "1"])
        let call = try await pool.applyAsync(sleepTask, 0.5)
        #expect(try await eventually { try await pool.workers().first?.busy == 1 })
        worker.signal(SIGTERM)
        #expect(try await call.get(timeout: 20) == 0.5, "the drained node finished the call it held")
        #expect(worker.stop(within: 20) == 0)
        #expect(try await eventually { try await pool.workers().isEmpty })
        await client.close()
    }
}


@Suite(.serialized) struct PoolBadInputTests {
    @Test func nonsenseWorkerHellosAndReportsForAssignmentsNotHeldAreRefusedAndOthersCarryOn() async throws {
        let (manager, real, client, pool) = try await startPool(["--threads", "1"])

        // A capacity no node can fill: an error frame, then the manager closes the connection.
        let greedy = Recorder<Message>()
        let greedyLink = try await WorkerLink.connect(port: manager.port, trust: .stateDirectory(path: manager.stateDirectory)) { greedy.append($0) }
        greedyLink.send(WorkerHello(node: "greedy", capacity: 1 << 40, tasks: ["echo"], pid: 1))
        #expect(await eventually { !greedyLink.isConnected })
        let refusal = greedy.values.first { $0.kind == .error }
        #expect(try refusal.map { try RemoteError(wireValue: $0.value()).code } == .valueError)

        // A zero capacity does not even parse.
        let zero = Recorder<Message>()
        let zeroLink = try await WorkerLink.connect(port: manager.port, trust: .stateDirectory(path: manager.stateDirectory)) { zero.append($0) }
        zeroLink.send(Heartbeat(busy: 0, capacity: 0))  // before any hello
        zeroLink.send(WorkerHello(node: "zero", capacity: 1, tasks: [], pid: 1))
        #expect(await eventually { zero.values.contains { $0.kind == .error } })

        // Results for an assignment this worker never got: BadRequest with its id; the
        // connection and the pool carry on.
        let liar = Recorder<Message>()
        let liarLink = try await WorkerLink.connect(port: manager.port, trust: .stateDirectory(path: manager.stateDirectory)) { liar.append($0) }
        liarLink.send(WorkerHello(node: "liar", capacity: 1, tasks: ["nothing-anyone-calls"], pid: 1))
        try await waitForWorkers(pool, 2)
        liarLink.send(TaskResult(results: [1, 2]), requestID: 424_242)
        liarLink.send(TaskFailure(index: 0, results: [], errorType: "E", message: "m"), requestID: 424_243)
        #expect(await eventually { liar.values.filter { $0.kind == .error }.count == 2 })
        #expect(liar.values.filter { $0.kind == .error }.map(\.requestID).sorted() == [424_242, 424_243])
        #expect(liarLink.isConnected)
        #expect(try await pool.map(echo, 0..<50) == Array(0..<50))
        #expect(try await pool.workers().contains { $0.node == "liar" })

        await liarLink.close()
        await zeroLink.close()
        await client.close()
        real.stop()
    }
}

@Suite(.serialized) struct PoolProgramTests {
    /// Runs `colony-examples` with arguments; returns its output.
    func example(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func theReadmesThreeCommandsRunAMapOnAWorkerNode() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "2"])
        let client = try await manager.connect()
        try await waitForWorkers(try await client.pool(), 1)
        let run = try example(["pool-map", String(manager.port), manager.stateDirectory])
        #expect(run.status == 0)
        #expect(run.output.contains("alpha  8ed3f6ad685b959e"), "\(run.output)")
        await client.close()
        worker.stop()
    }

    @Test func aWorkerProgramOfYourOwnServesItsOwnTask() async throws {
        let manager = try ManagerProcess()
        let node = Process()
        node.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        node.arguments = ["pool-worker", String(manager.port), manager.stateDirectory, "2"]
        node.standardOutput = FileHandle.nullDevice
        node.standardError = FileHandle.nullDevice
        try node.run()
        defer {
            if node.isRunning { kill(node.processIdentifier, SIGKILL) }
            node.waitUntilExit()
        }
        let client = try await manager.connect()
        try await waitForWorkers(try await client.pool(), 1)
        let run = try example(["pool-squares", String(manager.port), manager.stateDirectory])
        #expect(run.output.contains("[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]"), "\(run.output)")
        node.terminate()  // SIGTERM drains it
        for _ in 0..<200 where node.isRunning { usleep(50_000) }
        #expect(!node.isRunning)
        await client.close()
    }
}

@Suite(.serialized) struct PoolInitializerTests {
    @Test func anInitializerRunsInEachWorkerProcessBeforeItsFirstTask() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(
            manager: manager, arguments: ["--processes", "2", "--initializer", "setenv", "--initializer-args", #"{"GREETING": "hello"}"#])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let values = try await pool.map(PoolTask<String, String?>("getenv"), Array(repeating: "GREETING", count: 8), chunksize: 1)
        #expect(values == Array(repeating: "hello", count: 8), "\(worker.log)")
        await client.close()
        worker.stop()
    }
}

extension PoolInitializerTests {
    @Test func anUnknownInitializerStopsTheNodeAtStartWithAClearError() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "1", "--initializer", "nope"])
        #expect(await eventually(30) { !worker.process.isRunning }, "it exits by itself")
        #expect(worker.stop() != 0)
        #expect(worker.log.contains("no initializer named 'nope'"), "\(worker.log)")
        #expect(worker.log.contains("setenv"), "names the ones it has: \(worker.log)")
        #expect(!worker.log.contains("colony child"), "no worker process was started: \(worker.log)")
    }
}

@Suite(.serialized) struct PoolClientCrashTests {
    @Test func theResultsOfAClientThatCrashedWaitForAnotherToAdoptThem() async throws {
        let manager = try ManagerProcess()
        // One process for each of the crashed client's calls, so they all run at once.
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "3", "--pool", "orphans"])
        let client = try await manager.connect()
        let pool = try await client.pool("orphans", orphanGrace: .seconds(120))
        try await waitForWorkers(pool, 1)
        let readyFile = manager.stateDirectory + "/orphan-ids"
        let crashing = Process()
        crashing.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        crashing.arguments = ["pool-orphan", String(manager.port), manager.stateDirectory, readyFile]
        crashing.standardOutput = FileHandle.nullDevice
        try crashing.run()
        defer {
            if crashing.isRunning { kill(crashing.processIdentifier, SIGKILL) }
            crashing.waitUntilExit()
        }
        #expect(await eventually(30) { FileManager.default.fileExists(atPath: readyFile) })
        let ids = try String(contentsOfFile: readyFile, encoding: .utf8).split(whereSeparator: \.isWhitespace).compactMap { UInt64($0) }
        try #require(ids.count == 2)
        kill(crashing.processIdentifier, SIGKILL)
        crashing.waitUntilExit()

        // Adopting a live client's job is refused; a crashed one's works once its session is
        // gone. (Results the crashed client had already received went with it; these calls
        // were still running when it died.)
        let mine = try await pool.applyAsync(echo, 1)
        await #expect(throws: RemoteError.self) { try await client.pool("orphans").adopt(mine.jobID, of: echo) }
        var adopted: AsyncResult<Double>?
        _ = await eventually(10) {
            adopted = try? await pool.adopt(ids[0], of: sleepTask)
            return adopted != nil
        }
        #expect(try await adopted?.get(timeout: 30) == 3.5)
        let map = try await pool.adoptMap(ids[1], of: sleepTask)
        let values = try await map.get(timeout: 30)
        #expect(values == [3.0, 3.25])
        await client.close()
        worker.stop()
    }
}
