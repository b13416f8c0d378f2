import Colony
import Foundation
import NIOPosix
import Testing

@Suite(.serialized) struct ManagerIntegrationTests {
    @Test func everyDictMethodThroughTheRealManager() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        try await d.set("a", 1)
        try await d.update(["b": 2])
        try await d.update(["c": 3])
        #expect(try await d.get("a") == 1)
        #expect(try await d.getIfPresent("zz") == nil)
        #expect(try await d.contains("b"))
        #expect(try await d.count() == 3)
        #expect(try await d.keys() == ["a", "b", "c"])
        #expect(try await d.values() == [1, 2, 3])
        #expect(try await d.items().map { "\($0.0)=\($0.1)" } == ["a=1", "b=2", "c=3"])
        #expect(try await d.popItem() == ("c", 3))
        #expect(try await d.pop("b") == 2)
        #expect(try await d.setDefault("d", 4) == 4)
        #expect(try await d.increment("d", by: 6) == 10)
        #expect(try await d.compareAndSet("d", expected: 10, new: 11))
        #expect(try await !d.compareAndSet("d", expected: 10, new: 12))
        #expect(try await d.copy() == ["a": 1, "d": 11])
        var visited: [String] = []
        try await d.forEach(pageSize: 1) { key, _ in visited.append(key) }
        #expect(visited == ["a", "d"])
        try await d.delete("a")
        do {
            _ = try await d.get("a")
            Issue.record("a missing key was found")
        } catch let error as RemoteError {
            #expect(error.code == .keyError)
        }
        try await d.clear()
        #expect(try await d.count() == 0)
        await manager.close()
    }

    @Test func listNamespaceValueAndArray() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let l = try await manager.list(nil, Int.self)
        try await l.extend([5, 3, 9])
        try await l.append(1)
        try await l.insert(7, at: 0)
        #expect(try await l.copy() == [7, 5, 3, 9, 1])
        try await l.sort()
        #expect(try await l.slice(1, 4) == [3, 5, 7])
        #expect(try await l.get(-1) == 9)
        try await l.set(0, 2)
        try await l.replace(nil, 2, with: [0, 0, 0])
        try await l.deleteSlice(0, 1)
        #expect(try await l.copy() == [0, 0, 5, 7, 9])
        #expect(try await l.count(of: 0) == 2)
        #expect(try await l.index(of: 5) == 2)
        try await l.remove(0)
        #expect(try await l.pop() == 9)
        #expect(try await l.pop(0) == 0)
        try await l.reverse()
        #expect(try await l.copy() == [7, 5])
        #expect(try await l.contains(7))
        try await l.delete(0)
        #expect(try await l.count() == 1)
        try await l.clear()
        do {
            _ = try await l.pop()
            Issue.record("pop from an empty list succeeded")
        } catch let error as RemoteError {
            #expect(error.code == .indexError)
        }

        let ns = try await manager.namespace("settings")
        try await ns.set("name", "colony")
        try await ns.set("workers", 4)
        #expect(try await ns.get("name", as: String.self) == "colony")
        #expect(try await ns.attributes()["workers"] == 4)
        try await ns.delete("workers")
        do {
            _ = try await ns.get("workers", as: Int.self)
            Issue.record("a deleted attribute was found")
        } catch let error as RemoteError {
            #expect(error.code == .attributeError)
        }
        // Names starting with _ stay in the proxy, as in Python: another proxy of the same
        // namespace does not see them, and the manager never holds them.
        try await ns.set("_cache", 7)
        #expect(try await ns.get("_cache", as: Int.self) == 7)
        #expect(try await ns.attributes()["_cache"] == nil)
        let other = try manager.namespace(ns.reference)
        do {
            _ = try await other.get("_cache", as: Int.self)
            Issue.record("a proxy's _ attribute reached another proxy")
        } catch let error as RemoteError {
            #expect(error.code == .attributeError)
        }
        try await ns.delete("_cache")
        await #expect(throws: RemoteError.self) { try await ns.get("_cache", as: Int.self) }

        let v = try await manager.value(nil, typecode: "i", 10)
        #expect(try await v.increment(by: 5) == 15)
        try await v.set(3)
        #expect(try await v.get() == 3)
        #expect(try await v.compareAndSet(expected: 3, new: 4))

        let a = try await manager.array(nil, typecode: "d", [1.0, 2.0, 3.0])
        try await a.set(1, 2.5)
        #expect(try await a.increment(2, by: 1) == 4.0)
        #expect(try await a.copy() == [1.0, 2.5, 4.0])
        #expect(try await a.slice(nil, nil, step: -1) == [4.0, 2.5, 1.0])
        #expect(try await a.count() == 3)
        await manager.close()
    }

    @Test func blockingFaceFromPlainThreads() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let counter = try await manager.dict("counter", String.self, Int.self)
        let threads = try (0..<4).map { _ in
            let thread = Colony.Thread {
                for _ in 0..<100 { _ = try counter.increment("hits", by: 1) }
                try counter.set("last", 1)
            }
            try thread.start()
            return thread
        }
        for thread in threads { try thread.join(timeout: 60) }
        #expect(try await counter.get("hits") == 400)
        await manager.close()
    }

    @Test func manyConcurrentClientsKeepInvariants() async throws {
        let server = try ManagerProcess()
        let clients = 8, perClient = 200
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    let manager = try await server.connect()
                    let totals = try await manager.dict("totals", String.self, Int.self)
                    let log = try await manager.list("log", Int.self)
                    try await withThrowingTaskGroup(of: Void.self) { inner in
                        for i in 0..<perClient {
                            inner.addTask {
                                _ = try await totals.increment("sum", by: i)
                                try await log.append(client * perClient + i)
                            }
                        }
                        try await inner.waitForAll()
                    }
                    await manager.close()
                }
            }
            try await group.waitForAll()
        }
        let manager = try await server.connect()
        let totals = try await manager.dict("totals", String.self, Int.self)
        let log = try await manager.list("log", Int.self)
        #expect(try await totals.get("sum") == clients * (perClient * (perClient - 1) / 2))
        #expect(try await log.copy().sorted() == Array(0..<(clients * perClient)))
        await manager.close()
    }

    @Test func namedObjectsSurviveAReconnectAndProxiesCompareEqual() async throws {
        let server = try ManagerProcess()
        let first = try await server.connect()
        let config = try await first.dict("config", String.self, String.self)
        try await config.set("mode", "fast")
        let again = try await first.dict("config", String.self, String.self)
        #expect(config == again)
        #expect(Set([config, again]).count == 1)
        await first.close()
        do {
            try await config.set("mode", "slow")
            Issue.record("a closed connection still worked")
        } catch is ConnectionError {}
        let second = try await server.connect()
        #expect(try await second.dict("config", String.self, String.self).get("mode") == "fast")
        #expect(try await second.delete("config"))
        await second.close()
    }

    @Test func proxiesNestInsideContainersAndStayLive() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let index = try await manager.dict(nil, String.self, ObjectRef.self)
        do {
            let inner = try await manager.list(nil, String.self)
            try await inner.append("kept alive by the dict")
            try await index.set("inner", inner.reference)
        }
        let reference = try await index.get("inner")
        let inner = try manager.list(reference, String.self)
        #expect(try await inner.copy() == ["kept alive by the dict"])
        await manager.close()
    }

    @Test func aRestartedManagerNeverGivesAnOldIdToANewObjectAndSaysItRestarted() async throws {
        // Nothing kept, so the named dict is made anew.
        let first = try ManagerProcess(extraArguments: ["--persist", "off"])
        let before = try await first.connect()
        let old = try await before.dict("config", String.self, Int.self)
        try await old.set("a", 1)
        let firstInstance = before.instance
        // A proxy as a child process receives it: with the manager's address and instance.
        let passedOn = try WireValueEncoder(userInfo: [CodingUserInfoKey(rawValue: "colony.process-transfer")!: true]).encode(old)
        await before.close()
        first.stop()

        let second = try ManagerProcess(extraArguments: ["--port", String(first.port), "--persist", "off"], stateDirectory: first.stateDirectory)
        defer { second.stop() }
        let after = try await second.connect()
        #expect(after.instance.count == 32 && after.instance != firstInstance)
        let fresh = try await after.dict("config", String.self, Int.self)
        #expect(fresh.reference.id > old.reference.id, "ids go on past the earlier run's")
        // The old id reaches nothing, never the new object.
        let stale = try after.dict(old.reference, String.self, Int.self)
        await #expect(throws: RemoteError.self) { try await stale.count() }
        #expect(try await fresh.count() == 0)
        // A proxy passed on before the restart says so when it arrives.
        #expect {
            try WireValueDecoder().decode(DictProxy<String, Int>.self, from: passedOn)
        } throws: { error in
            (error as? RemoteError)?.code == .noSuchObject && "\(error)".contains("restarted")
        }
        await after.close()
    }

    @Test func aMemoryBudgetRefusesWhatDoesNotFitAndTheManagerServesOn() async throws {
        let server = try ManagerProcess(extraArguments: ["--max-memory", "200M"])
        let manager = try await server.connect()
        // Sized before it is made: 10^8 doubles do not fit in 200 MiB.
        let huge = await Result { try await manager.array(typecode: "d", size: 100_000_000, of: Double.self) }
        #expect((huge.failure as? RemoteError)?.code == .outOfMemory, "\(huge)")
        #expect(try await manager.array(typecode: "d", size: 1000, of: Double.self).get(999) == 0)
        // A 60 MiB value arrives in chunks; partial messages may hold a quarter of the budget.
        let writer = try await server.connect()
        let big = try await writer.dict(nil, String.self, String.self)
        let refused = await Result { try await big.set("blob", String(repeating: "x", count: 60 << 20)) }
        #expect(refused.failure != nil, "the connection was refused and closed: \(refused)")
        let status = try await manager.status()
        #expect(status["memory"]?["limit"]?.int64Value == 200 << 20)
        #expect(status["memory"]?["refused"]?.int64Value ?? 0 >= 2)
        #expect(status["memory"]?["partial"]?.int64Value == 0, "the closed connection's chunks were given back")
        let scratch = try await manager.dict(nil, String.self, Int.self)
        try await scratch.set("still", 1)
        #expect(try await scratch.get("still") == 1)
        await writer.close()
        await manager.close()
    }

    @Test func aHeavyRequestLeavesTheEventLoopToTheOtherSessions() async throws {
        // One event loop serves both connections.
        let server = try ManagerProcess(extraArguments: ["--event-loop-threads", "1"])
        let heavy = try await server.connect()
        let light = try await server.connect()
        let scratch = try await light.dict(nil, String.self, Int.self)
        // An Array of 3×10^7 items, asked for in 40 bytes: the manager takes a long while
        // to make it, and used to make it on the event loop, where nothing else ran meanwhile.
        let finished = Flag()
        let made = Task { () async throws -> (ArrayProxy<Int>, Date) in
            defer { finished.set() }
            let array = try await heavy.array(typecode: "q", size: 30_000_000, of: Int.self)
            return (array, Date())
        }
        try await Task.sleep(for: .milliseconds(100))  // the request is on the manager
        // The heavy session's next request waits for it: a session's requests run in order.
        let next = Task { () async throws -> Date in
            _ = try await heavy.dict(nil, String.self, Int.self)
            return Date()
        }
        // The light session's round trips go on until the Array is made; on a loop held by
        // the heavy request none of them could finish before it.
        var answered: [Date] = []
        while !finished.isSet {
            try await scratch.set("round", answered.count)
            answered.append(Date())
        }
        let (array, heavyDone) = try await made.value
        let meanwhile = answered.filter { $0 < heavyDone }.count
        #expect(meanwhile >= 3, "the other session was served while the Array was made (\(meanwhile) of \(answered.count))")
        #expect(try await next.value >= heavyDone)
        #expect(try await array.count() == 30_000_000)
        #expect(try await array.get(29_999_999) == 0)
        // A big answer is encoded off the loop too, and leaves in slices.
        let medium = try await heavy.array(typecode: "q", size: 300_000, of: Int.self)
        try await medium.set(299_999, 7)
        let copied = try await medium.copy()
        #expect(copied.count == 300_000 && copied.last == 7)
        await heavy.close()
        await light.close()
    }

    @Test func aClientThatLeavesWhileItsHeavyRequestRunsLeavesNothingBehind() async throws {
        let server = try ManagerProcess(extraArguments: ["--event-loop-threads", "1"])
        let observer = try await server.connect()
        func objectCount() async throws -> Int { try await observer.status()["objects"]?.arrayValue?.count ?? -1 }
        let leaver = try await server.connect()
        let kept = try await leaver.dict("kept", String.self, Int.self)
        try await kept.set("before", 1)
        let made = Task { try await leaver.array(typecode: "q", size: 20_000_000, of: Int.self) }
        try await Task.sleep(for: .milliseconds(100))  // the request is on the manager
        // A request behind it, then goodbye and the close, all while it runs.
        let behind = Task { try await kept.set("behind", 2) }
        await leaver.close()
        _ = await made.result
        _ = await behind.result
        // The anonymous Array went with the session that made it; the named dict stays, and
        // the manager serves on.
        #expect(try await eventually { try await objectCount() == 1 })
        let again = try await observer.dict("kept", String.self, Int.self)
        #expect(try await again.get("before") == 1)
        try await again.set("after", 3)
        #expect(try await again.count() >= 2)
        await observer.close()
    }

    @Test func callsFromTheConnectionsOwnExecutor() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        let total = try await withTaskExecutorPreference(manager.executor) {
            for i in 0..<50 { _ = try await d.increment("n", by: i) }
            return try await d.get("n")
        }
        #expect(total == 50 * 49 / 2)
        // A blocking call made on the connection's own event-loop thread could never get its
        // answer: it is refused with an error instead of hanging.
        let blockingGet: @Sendable () throws -> Int = { try d.get("n") }
        _ = await withTaskExecutorPreference(manager.executor) {
            #expect(throws: ConnectionError.self) { try blockingGet() }
        }
        #expect(try blockingGet() == 50 * 49 / 2)
        await manager.close()
    }

    @Test func pipelinesAnswerInOrderOnAnEventLoopGroupOfTheirOwn() async throws {
        let server = try ManagerProcess()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let manager = try await Manager.connect(port: server.port, trust: .stateDirectory(path: server.stateDirectory), eventLoopGroup: group)
        let d = try await manager.dict(nil, String.self, Int.self)
        let id = d.reference.id
        var requests: [Request] = []
        for i in 0..<500 {
            requests.append(DictCall.setItem(.string("k\(i)"), .integer(i)).request(object: id))
            requests.append(DictCall.getItem(.string(i % 2 == 0 ? "k\(i)" : "missing")).request(object: id))
        }
        let results = try await manager.pipeline(requests)
        #expect(results.count == 1_000)
        for i in 0..<500 {
            #expect(try results[2 * i].get() == .null)
            switch results[2 * i + 1] {
            case .success(let value): #expect(i % 2 == 0 && value == .integer(i), "answer \(2 * i + 1)")
            case .failure(let error): #expect(i % 2 == 1 && (error as? RemoteError)?.code == .keyError, "answer \(2 * i + 1)")
            }
        }
        #expect(try await manager.pipeline([]).isEmpty)
        // From a task on the connection's own event loop, the requests are written at once.
        let onLoop = try await withTaskExecutorPreference(manager.executor) { try await manager.pipeline(Array(requests[0..<4])) }
        #expect(try onLoop[1].get() == 0)
        if case .failure(let error) = onLoop[3] { #expect((error as? RemoteError)?.code == .keyError) } else { Issue.record("expected a KeyError") }
        await manager.close()
        try await group.shutdownGracefully()
    }

    @Test func pipelinesAndSingleCallsInterleaveOnOneConnection() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        let id = d.reference.id
        // Several pipelines and single calls from many tasks at once, on one connection: each
        // answer must reach the request that asked for it.
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for task in 0..<8 {
                tasks.addTask {
                    for round in 0..<20 {
                        let keys = (0..<25).map { "t\(task)-r\(round)-\($0)" }
                        let sets = keys.enumerated().map { DictCall.setItem(.string($1), .integer($0)).request(object: id) }
                        _ = try await manager.pipeline(sets)
                        let gets = keys.map { DictCall.getItem(.string($0)).request(object: id) }
                        let answers = try await manager.pipeline(gets)
                        #expect(try answers.map { try $0.get() } == (0..<25).map { WireValue.integer($0) })
                        #expect(try await d.get(keys[round % 25]) == round % 25)
                    }
                }
            }
            try await tasks.waitForAll()
        }
        #expect(try await d.count() == 8 * 20 * 25)
        await manager.close()
    }

    @Test func aPipelineInFlightWhenTheManagerDiesEndsWithConnectionErrors() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let id = try await manager.dict(nil, String.self, Int.self).reference.id
        let requests = (0..<50_000).map { DictCall.setItem(.string("k\($0 % 100)"), .integer($0)).request(object: id) }
        async let answers = manager.pipeline(requests)
        try await Task.sleep(nanoseconds: 2_000_000)
        kill(server.process.processIdentifier, SIGKILL)
        let results = try await answers
        // Every request has an outcome: answered before the kill, or a ConnectionError.
        #expect(results.count == requests.count)
        for result in results {
            if case .failure(let error) = result { #expect(error is ConnectionError, "\(error)") }
        }
        await #expect(throws: ConnectionError.self) { try await manager.status() }
    }

    @Test func batchesRunInOneRoundTrip() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        let id = d.reference.id
        let results = try await manager.batch([
            DictCall.setItem("x", 1).request(object: id), DictCall.getItem("x").request(object: id),
            DictCall.getItem("nope").request(object: id),
        ])
        #expect(try results[1].get() == 1)
        if case .failure(let error) = results[2] { #expect(error.code == .keyError) } else { Issue.record("expected a KeyError") }
        await manager.close()
    }
}

/// The proxy features of Python 3.9–3.14 that the manager runs: dict `|`, `|=`, `fromkeys`
/// and `reversed`; list `+`, `*`, `+=`, `*=`; the shared set; and `for try await` over them.
@Suite(.serialized) struct ContainerOperatorTests {
    @Test func dictAndListOperatorsRunOnTheManager() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        try await d.set("a", 1)  // one at a time: the insertion order is what reversed shows
        try await d.set("b", 2)
        #expect(try await d | ["b": 20, "c": 3] == ["a": 1, "b": 20, "c": 3])
        #expect(try await d.copy() == ["a": 1, "b": 2], "| makes a new dict")
        try await d |= ["c": 3]
        #expect(try await d.reversedKeys() == ["c", "b", "a"])
        #expect(try await d.fromKeys(["x", "y"], value: 0) == ["x": 0, "y": 0])
        #expect(try await d.count() == 3, "fromkeys leaves the shared dict alone")
        var entries: [String: Int] = [:]
        for try await (key, value) in d { entries[key] = value }
        #expect(entries == ["a": 1, "b": 2, "c": 3])

        let l = try await manager.list(nil, Int.self)
        try await l.extend([1, 2])
        #expect(try await l + [3] == [1, 2, 3])
        #expect(try await l * 2 == [1, 2, 1, 2])
        #expect(try await l * -1 == [], "a negative count is zero, as in Python")
        try await l += [3]
        try await l *= 2
        #expect(try await l.copy() == [1, 2, 3, 1, 2, 3])
        // Iteration pages through long lists.
        try await l.extend(Array(0..<2500))
        var seen: [Int] = []
        for try await value in l { seen.append(value) }
        #expect(seen == [1, 2, 3, 1, 2, 3] + Array(0..<2500))
        // The blocking faces, from a plain thread.
        let blocking = try await Task.detached { () throws -> ([String: Int], [Int]) in (try d | ["z": 26], try l * 0) }.value
        #expect(blocking.0["z"] == 26 && blocking.1 == [])
        await manager.close()
    }

    @Test func aSharedSetWithPythonsMethodsAndOperators() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let s = try await manager.set("tags", String.self)
        try await s.add("a")
        try await s.add("b")
        try await s.add("a")
        #expect(try await s.count() == 2)
        #expect(try await s.contains("a"))
        #expect(try await !s.contains("z"))
        #expect(try await s | ["c"] == ["a", "b", "c"])
        #expect(try await s & ["b", "c"] == ["b"])
        #expect(try await s - ["a"] == ["b"])
        #expect(try await s ^ ["b", "c"] == ["a", "c"])
        #expect(try await s.copy() == ["a", "b"], "the operators make new sets")
        try await s |= ["c", "d"]
        try await s -= ["a"]
        try await s &= ["b", "c", "x"]
        try await s ^= ["c", "e"]
        #expect(try await s.copy() == ["b", "e"])
        #expect(try await s.isRelated(.subset, to: ["b", "e", "f"]))
        #expect(try await s.isRelated(.superset, to: ["e"]))
        #expect(try await s.isRelated(.disjoint, to: ["q"]))
        do {
            try await s.remove("nope")
            Issue.record("removing an absent member succeeded")
        } catch let error as RemoteError {
            #expect(error.code == .keyError)
        }
        try await s.discard("nope")
        let other = try manager.set(s.reference, String.self)
        var members: Set<String> = []
        for try await member in other { members.insert(member) }
        #expect(members == ["b", "e"])
        _ = try await s.pop()
        _ = try await s.pop()
        await #expect(throws: RemoteError.self) { _ = try await s.pop() }

        // Python's equality: 1, 1.0 and True are one member.
        let numbers = try await manager.set(nil, Double.self)
        try await numbers.add(1.0)
        let asInt = try manager.set(numbers.reference, Int.self)
        try await asInt.add(1)
        #expect(try await numbers.count() == 1)
        await manager.close()
    }
}

@Suite(.serialized) struct ManagerSecurityTests {
    @Test func wrongAuthkeyIsRejected() async throws {
        let server = try ManagerProcess()
        do {
            _ = try await server.connect(authKey: Array(repeating: 1, count: 32))
            Issue.record("a wrong authkey was accepted")
        } catch let error as AuthenticationError {
            #expect(error.message.contains("authkey"))
        }
        // The manager still serves the right key.
        let manager = try await server.connect()
        await manager.close()
    }

    @Test func plaintextClientIsRejected() async throws {
        let server = try ManagerProcess()
        let key = try AuthKey.bytes(fromFile: server.stateDirectory + "/authkey")
        await #expect(throws: ConnectionError.self) {
            _ = try await Manager.connect(port: server.port, authKey: key, trust: .insecurePlaintext, timeoutSeconds: 5)
        }
    }

    @Test func clientWithoutTheTrustedCAIsRejected() async throws {
        let server = try ManagerProcess()
        let other = try ManagerProcess()  // a second state directory: another CA
        let key = try AuthKey.bytes(fromFile: server.stateDirectory + "/authkey")
        await #expect(throws: ConnectionError.self) {
            _ = try await Manager.connect(
                port: server.port, authKey: key, trust: .certificateAuthority(path: other.stateDirectory + "/ca.pem"), timeoutSeconds: 5)
        }
    }

    @Test func killedClientLeaksNoAnonymousObjects() async throws {
        let server = try ManagerProcess()
        let holder = Process()
        holder.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        let readyFile = server.stateDirectory + "/holder-ready"
        holder.arguments = ["manager-hold", String(server.port), server.stateDirectory, readyFile]
        try holder.run()
        defer {
            if holder.isRunning { kill(holder.processIdentifier, SIGKILL) }
            holder.waitUntilExit()
        }
        let ready = await eventually(30) { FileManager.default.fileExists(atPath: readyFile) }
        try #require(ready, "the holder never got its objects")
        let observer = try await server.connect()
        func objectCount() async throws -> Int { try await observer.status()["objects"]?.arrayValue?.count ?? -1 }
        #expect(try await objectCount() == 3)
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        #expect(holder.terminationStatus == SIGKILL)
        #expect(try await eventually { try await objectCount() == 0 })
        await observer.close()
    }

    @Test func garbageAndOversizedFramesGetAnErrorAndOthersAreStillServed() async throws {
        let server = try ManagerProcess(extraArguments: ["--insecure-plaintext", "--max-frame", "4096"])
        let key = try AuthKey.bytes(fromFile: server.stateDirectory + "/authkey")
        // Reserved header bits set: a BadRequest error frame, then close.
        let garbage = try rawExchange(port: server.port, send: [0, 0, 0, 0, 0x10, 0, 0xff, 0xff] + Array(repeating: 0, count: 8))
        #expect(garbage.count >= 16 && garbage[4] == FrameKind.error.rawValue)
        // A header announcing 1 GiB: TooLarge, before any body is read.
        var header: [UInt8] = [0x40, 0, 0, 0, 0x01, 0, 0, 0]
        header += [0, 0, 0, 0, 0, 0, 0, 9]
        let oversized = try rawExchange(port: server.port, send: header)
        #expect(oversized.count >= 16 && oversized[4] == FrameKind.error.rawValue)
        let body = Array(oversized[16...])
        #expect(try RemoteError(wireValue: WireValue(messagePack: body)).code == .tooLarge)
        // Meanwhile a proper client works.
        let manager = try await Manager.connect(port: server.port, authKey: key, trust: .insecurePlaintext)
        let d = try await manager.dict(nil, String.self, Int.self)
        try await d.set("still", 1)
        #expect(try await d.get("still") == 1)
        await manager.close()
    }
}

@Suite(.serialized) struct HandshakeDeadlineTests {
    @Test func aConnectionThatNeverCompletesTheHandshakeIsDropped() async throws {
        let server = try ManagerProcess(extraArguments: ["--insecure-plaintext", "--handshake-timeout", "0.3"])
        // Send nothing at all: the manager must close the connection on its own (the raw
        // client gives up after 10 s, so a missing deadline shows as a timeout, not a hang).
        let answer = try rawExchange(port: server.port, send: [])
        #expect(answer.count >= 16 && answer[4] == FrameKind.error.rawValue)
        let body = Array(answer[16..<(16 + Int(answer[3]))])
        #expect(try RemoteError(wireValue: WireValue(messagePack: body)).code == .authFailed)
    }
}

/// Sends raw bytes to a plaintext manager and returns everything it answers before closing.
func rawExchange(port: Int, send bytes: [UInt8]) throws -> [UInt8] {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ConnectionError("socket failed") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw ConnectionError("connect failed") }
    _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        received += buffer[..<count]
    }
    return received
}

/// The README's manager example, verbatim apart from the port and directory.
@Suite(.serialized) struct ReadmeManagerExampleTests {
    @Test func readmeExampleRuns() async throws {
        let server = try ManagerProcess()
        let port = server.port, stateDirectory = server.stateDirectory

        let manager = try await Manager.connect(port: port, trust: .stateDirectory(path: stateDirectory))
        let config = try await manager.dict("config", String.self, Int.self)  // named: create or open
        try await config.set("workers", 4)
        let hits = try await config.increment("hits", by: 1)  // atomic on the manager
        let log = try await manager.list(nil, String.self)  // anonymous: freed with the last reference
        try await log.append("started")
        do {
            _ = try await config.get("missing")
        } catch let error as RemoteError where error.code == .keyError {
            print("no such key, as Python's KeyError")
        }
        let snapshot = try await config.copy()  // compare contents through a copy
        await manager.close()

        #expect(hits == 1)
        #expect(snapshot == ["workers": 4, "hits": 1])
    }

    @Test func readmeBlockingObjectsExampleRuns() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()

        let jobs = try await manager.joinableQueue("jobs", String.self, maxsize: 100)
        try await jobs.put("photo 1")                           // waits on the manager while full
        try await jobs.put(contentsOf: ["photo 2", "photo 3"])  // beyond Python: one round trip
        let job = try await jobs.get(timeout: 5)                // QueueEmpty after 5 s
        try await jobs.taskDone()

        let lock = try await manager.lock("accounts")
        let grant = try await lock.acquireGrant()  // acquired, fencingToken, previousOwnerDied
        if grant.previousOwnerDied { print("the last holder died holding it: check the accounts") }
        try await lock.release()

        let barrier = try await manager.barrier("phase", parties: 1, action: { print("phase done") })
        let index = try await barrier.wait()  // the last party to arrive gets 0 and runs the action

        #expect(job == "photo 1")
        #expect(grant.acquired && grant.fencingToken == 1 && !grant.previousOwnerDied)
        #expect(index == 0)
        #expect(try await jobs.qsize() == 2)
        await manager.close()
    }
}

@Suite(.serialized) struct MutualTLSTests {
    /// Runs the real `colony` command line; fails the test on a non-zero exit.
    func colony(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = buildDirectory.appendingPathComponent("colony")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "colony \(arguments.joined(separator: " "))")
    }

    @Test func clientCertificatesAreRequiredWhenConfigured() async throws {
        let directory = NSTemporaryDirectory() + "colony-mtls-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try colony(["certs", "ca", "--out", directory])
        try colony(["certs", "issue", "--ca-dir", directory, "--name", "manager", "--dns", "localhost", "--ip", "127.0.0.1"])
        try colony(["certs", "issue", "--ca-dir", directory, "--name", "alice", "--client"])
        let server = try ManagerProcess(extraArguments: [
            "--certificate", directory + "/manager.pem", "--private-key", directory + "/manager-key.pem",
            "--client-ca", directory + "/ca.pem",
        ])
        let key = try AuthKey.bytes(fromFile: server.stateDirectory + "/authkey")
        let trust = ManagerTrust.certificateAuthority(path: directory + "/ca.pem")
        await #expect(throws: ConnectionError.self) {
            _ = try await Manager.connect(port: server.port, authKey: key, trust: trust, timeoutSeconds: 5)
        }
        let manager = try await Manager.connect(
            port: server.port, authKey: key, trust: trust,
            clientCertificate: ClientCertificate(certificatePath: directory + "/alice.pem", privateKeyPath: directory + "/alice-key.pem"))
        let d = try await manager.dict(nil, String.self, Int.self)
        try await d.set("mtls", 1)
        #expect(try await d.get("mtls") == 1)
        await manager.close()
    }
}

/// Busy polling is a speed policy: answers must be the same with it on, off, or mixed on one
/// event loop, and a long budget must never hold up a connection that has work.
@Suite(.serialized, .timeLimit(.minutes(1))) struct BusyPollingTests {
    @Test func callsWorkWithBusyPollingOffOnBothEnds() async throws {
        let server = try ManagerProcess(extraArguments: ["--busy-poll-us", "0"])
        let manager = try await Manager.connect(port: server.port, trust: .stateDirectory(path: server.stateDirectory), busyPoll: .zero)
        let d = try await manager.dict(nil, String.self, Int.self)
        for i in 0..<20 { try await d.set("k", i) }
        #expect(try await d.get("k") == 19)
        #expect(try await BusyPollingTests.pollsCounted(by: manager) == 0)
        await manager.close()
    }

    /// The manager's busy polls so far, whatever ended them, as `colony status` counts them.
    static func pollsCounted(by manager: Manager) async throws -> Int64 {
        let counters = try await manager.status()["counters"]
        let names = [
            "busy_polls_ended_by_work", "busy_polls_timed_out", "busy_poll_chances_skipped", "busy_poll_chances_skipped_while_crowded",
        ]
        return try names.reduce(0) { total, name in try total + #require(counters?[name]?.int64Value) }
    }

    @Test func theManagerPollsByDefaultAndCountsItsPolls() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        for i in 0..<20 { try await d.set("k", i) }
        // (Where this process has a single CPU, the manager rightly never polls.)
        let polls = try await BusyPollingTests.pollsCounted(by: manager)
        #expect(ProcessInfo.processInfo.activeProcessorCount == 1 || polls > 0)
        await manager.close()
    }

    @Test func connectionsWithDifferentBudgetsShareAnEventLoop() async throws {
        let server = try ManagerProcess()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // One-second budgets next to connections that do not poll, on one event loop: every
        // answer must still reach its caller. (That a poll stops for a readable socket or for
        // handed-over work is pinned down in ColonyTransportTests; here a poll that did not
        // stop would make calls slow, not wrong.)
        var managers: [Manager] = []
        for budget: Duration in [.zero, .seconds(1), .microseconds(50), .seconds(1)] {
            managers.append(
                try await Manager.connect(
                    port: server.port, trust: .stateDirectory(path: server.stateDirectory), eventLoopGroup: group, busyPoll: budget))
        }
        let counter = try await managers[0].dict("busy-poll-counter", String.self, Int.self)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (index, manager) in managers.enumerated() {
                let d = try await manager.dict("busy-poll-counter", String.self, Int.self)
                // Half the clients run on the connection's event loop, half on the global pool.
                if index % 2 == 0 {
                    tasks.addTask(executorPreference: manager.executor) { for _ in 0..<100 { _ = try await d.increment("n", by: 1) } }
                } else {
                    tasks.addTask { for _ in 0..<100 { _ = try await d.increment("n", by: 1) } }
                }
            }
            try await tasks.waitForAll()
        }
        #expect(try await counter.get("n") == 400)
        // A parked call answered later (another session's put) reaches a polling connection.
        let queue = try await managers[1].queue("busy-poll-queue", Int.self)
        async let got = queue.get(timeout: 10)
        try await Task.sleep(nanoseconds: 20_000_000)
        try await managers[2].queue("busy-poll-queue", Int.self).put(7)
        #expect(try await got == 7)
        for manager in managers { await manager.close() }
        try await group.shutdownGracefully()
    }

    @Test func aManagerWithOneCPUNeverPolls() async throws {
        // A poll there would only keep the CPU from the client that sends the next request.
        let server = try ManagerProcess(launcher: ["/usr/bin/taskset", "-c", "0"])
        let manager = try await server.connect()
        let d = try await manager.dict(nil, String.self, Int.self)
        for i in 0..<20 { try await d.set("k", i) }
        #expect(try await BusyPollingTests.pollsCounted(by: manager) == 0)
        await manager.close()
    }

    @Test func aBudgetOutOfRangeIsRefused() async throws {
        let server = try ManagerProcess()
        await #expect(throws: ConnectionError.self) {
            _ = try await Manager.connect(port: server.port, trust: .stateDirectory(path: server.stateDirectory), busyPoll: .seconds(-1))
        }
        await #expect(throws: ConnectionError.self) {
            _ = try await Manager.connect(port: server.port, trust: .stateDirectory(path: server.stateDirectory), busyPoll: .seconds(2))
        }
        let process = Process()
        process.executableURL = buildDirectory.appendingPathComponent("colony")
        process.arguments = ["manager", "--busy-poll-us", "-1", "--port", "0"]
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("--busy-poll-us"))
    }
}

/// A flag one task sets and another polls.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
