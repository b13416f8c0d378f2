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
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--threads", "2", "--node", "threads-node"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
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
        #expect(try await pool.map(echo, 0..<10, chunksize: 3) == Array(0..<10))
        let mapped = try await pool.mapAsync(echo, [3, 2, 1])
        #expect(try await mapped.get() == [3, 2, 1])
        #expect(try await pool.starmap(echo, [[5], [6]]) == [5, 6])

        let ordered = try pool.imap(echo, 0..<3000, chunksize: 7)
        var seen: [Int] = []
        for try await value in ordered { seen.append(value) }
        #expect(seen == Array(0..<3000))
        #expect(ordered.progress.completed == 3000)
        #expect(ordered.progress.total == 3000)
        let unordered = try pool.imapUnordered(echo, 0..<500)
        #expect(try await unordered.collect().sorted() == Array(0..<500))

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

        // A timeout leaves the call running; its result can be had later.
        let slow = try await pool.applyAsync(sleepTask, 0.5)
        await #expect(throws: TimeoutError.self) { try await slow.get(timeout: 0.05) }
        #expect(try await slow.get(timeout: 10) == 0.5)

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
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--threads", "2"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let outcome = Future<[Int]>()
        let thread = Threading.Thread {
            do {
                var results = [try pool.apply(echo, 1)]
                results += try pool.map(echo, [2, 3])
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
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "2"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let children = worker.children
        #expect(children.count == 2, "\(worker.log)")
        // Distinct durations, so the results show their order.
        let inputs = (0..<60).map { 0.02 + Double($0) * 1e-6 }
        let map = try await pool.mapAsync(sleepTask, inputs, chunksize: 3)
        try await Task.sleep(for: .milliseconds(150))
        if let victim = children.first { kill(victim, SIGKILL) }
        #expect(try await map.get(timeout: 60) == inputs)
        #expect(try await eventually { worker.children.count == 2 && worker.children != children }, "a new process replaces the dead one")
        #expect(try await client.status()["pools"]?.arrayValue?.first?["retried"]?.int64Value ?? 0 >= 1)
        await client.close()
        worker.stop()
    }

    @Test func aCallThatKeepsKillingItsWorkerFailsWithWorkerLostAndTheRestComplete() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "2", "--pool", "crashy"])
        let client = try await manager.connect()
        let pool = try await client.pool("crashy", maxAttempts: 3)
        try await waitForWorkers(pool, 1)
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
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "1", "--maxtasksperchild", "2"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let pids = try await pool.map(pidTask, 0..<6, chunksize: 1)
        #expect(Set(pids).count == 3, "6 calls, 2 per process: \(pids)")
        await client.close()
        worker.stop()
    }

    @Test func terminateStopsRunningTasks() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--processes", "1"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let before = worker.children
        let long = try await pool.applyAsync(sleepTask, 60)
        #expect(try await eventually { try await pool.workers().first?.busy == 1 })
        try await pool.terminate()
        await #expect(throws: CancelledError.self) { try await long.get(timeout: 20) }
        #expect(try await pool.join(timeout: 20))
        // The process running the call was killed and replaced; the node serves on.
        #expect(try await eventually { worker.children.count == 1 && worker.children != before })
        await client.close()
        let again = try await manager.connect()
        #expect(try await again.pool().apply(echo, 5) == 5)
        await again.close()
        worker.stop()
    }

    @Test func aNodeThatJoinsDuringAMapGetsWorkAndAKilledNodesCallsRunElsewhere() async throws {
        let manager = try ManagerProcess()
        let first = try WorkerProcess(manager: manager, arguments: ["--threads", "1", "--node", "first"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let map = try await pool.mapAsync(sleepTask, Array(repeating: 0.05, count: 80), chunksize: 1)
        let second = try WorkerProcess(manager: manager, arguments: ["--threads", "2", "--node", "second"])
        #expect(try await eventually(30) { try await pool.workers().first { $0.node == "second" }.map { $0.done > 0 } ?? false })
        // SIGKILL the first node in the middle: its calls run again on the second.
        first.signal(SIGKILL)
        let results = try await map.get(timeout: 60)
        #expect(results.count == 80)
        await client.close()
        second.stop()
        first.stop()
    }

    @Test func aDrainedNodeFinishesItsCallsAndLeaves() async throws {
        let manager = try ManagerProcess()
        let worker = try WorkerProcess(manager: manager, arguments: ["--threads", "1"])
        let client = try await manager.connect()
        let pool = try await client.pool()
        try await waitForWorkers(pool, 1)
        let call = try await pool.applyAsync(sleepTask, 0.5)
        #expect(try await eventually { try await pool.workers().first?.busy == 1 })
        worker.signal(SIGTERM)
        #expect(try await call.get(timeout: 20) == 0.5, "the drained node finished the call it held")
        #expect(worker.stop(within: 20) == 0)
        #expect(try await eventually { try await pool.workers().isEmpty })
        await client.close()
    }
}
