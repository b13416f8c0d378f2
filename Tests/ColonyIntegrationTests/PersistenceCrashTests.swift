import Colony
import Foundation
import Testing

/// What clients were told succeeded, gathered from concurrent tasks.
private final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: Int] = [:]
    private var put: [String] = []
    private var got: [String] = []
    private var times: [String: Date] = [:]

    func entry(_ key: String, _ value: Int) {
        lock.withLock {
            entries[key] = value
            times[key] = Date()
        }
    }
    func putItem(_ item: String) { lock.withLock { put.append(item) } }
    func gotItems(_ items: [String]) { lock.withLock { got += items } }

    var snapshot: (entries: [String: Int], put: [String], got: [String], times: [String: Date]) {
        lock.withLock { (entries, put, got, times) }
    }
}

/// `colony manager --persist`: real managers killed with SIGKILL at random moments while
/// clients write, restarted on the same state directory.
@Suite(.serialized) struct PersistenceCrashTests {
    /// Writers set dict entries and put queue items, a reader takes items, until the manager
    /// is killed; every write they were told succeeded must be there after the restart.
    private func writeUntilKilled(_ server: ManagerProcess, round: Int, killAfter: Double, into acknowledged: Acknowledged) async throws {
        let manager = try await server.connect()
        let entries = try await manager.dict("acknowledged", String.self, Int.self)
        let jobs = try await manager.queue("jobs", String.self)
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for index in 0... {
                        let key = "r\(round)-w\(writer)-\(index)"
                        do {
                            try await entries.set(key, index)
                            acknowledged.entry(key, index)
                            try await jobs.put(key)
                            acknowledged.putItem(key)
                        } catch {
                            return  // the manager is gone
                        }
                    }
                }
            }
            group.addTask {
                while true {
                    guard let items = try? await jobs.get(upTo: 3, timeout: 5) else { return }
                    acknowledged.gotItems(items)
                }
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(killAfter * 1e9))
                kill(server.process.processIdentifier, SIGKILL)
            }
        }
        server.stop()
        await manager.close()
    }

    @Test func withAlwaysNoAcknowledgedWriteIsLostAndNoQueueItemComesTwice() async throws {
        // A small journal is compacted often, so kills land in compactions too.
        let arguments = ["--persist", "always", "--journal-compact-size", "64K"]
        let first = try ManagerProcess(extraArguments: arguments)
        let directory = first.stateDirectory
        let acknowledged = Acknowledged()
        // Each process removes the state directory when it goes, so all are kept to the end.
        var servers = [first]
        let rounds = 10
        for round in 0..<rounds {
            try await writeUntilKilled(servers.last!, round: round, killAfter: Double.random(in: 0.05...0.4), into: acknowledged)
            servers.append(try ManagerProcess(extraArguments: arguments, stateDirectory: directory))
        }
        let server = servers.last!
        defer { server.stop() }
        let manager = try await server.connect()
        let (entries, put, got, _) = acknowledged.snapshot
        let stored = try await manager.dict("acknowledged", String.self, Int.self).copy()
        let lost = entries.filter { stored[$0.key] != $0.value }
        #expect(lost.isEmpty, "acknowledged entries missing or wrong after restarts: \(lost.keys.sorted().prefix(10))")
        #expect(entries.count > rounds, "the writers should have written something each round (\(entries.count))")

        let jobs = try await manager.queue("jobs", String.self)
        let queued = try await jobs.qsize()
        let remaining = queued == 0 ? [] : try await jobs.get(upTo: queued, block: false)
        // Nothing twice: no item is both taken and still queued, and none is queued twice.
        #expect(Set(remaining).count == remaining.count)
        #expect(Set(remaining).isDisjoint(with: got))
        #expect(Set(got).count == got.count)
        // Nothing lost, but what a reader's unanswered get took as the manager died (one
        // get of up to 3 items per round).
        let unaccounted = Set(put).subtracting(remaining).subtracting(got)
        #expect(unaccounted.count <= 3 * rounds, "acknowledged puts neither queued nor taken: \(unaccounted.sorted().prefix(10))")
        print(
            "persistence crash test: \(rounds) SIGKILLs; \(entries.count) acknowledged dict writes, all there; \(put.count) acknowledged puts: \(got.count) taken, \(remaining.count) still queued, \(unaccounted.count) taken by gets the kill left unanswered; none twice"
        )
        await manager.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func withEverysecAKillLosesAtMostTheLastSecond() async throws {
        let first = try ManagerProcess(extraArguments: ["--persist", "everysec"])
        let directory = first.stateDirectory
        let acknowledged = Acknowledged()
        try await writeUntilKilled(first, round: 0, killAfter: 1.5, into: acknowledged)
        let killed = Date()
        let second = try ManagerProcess(extraArguments: ["--persist", "everysec"], stateDirectory: directory)
        defer { second.stop() }
        let manager = try await second.connect()
        let stored = try await manager.dict("acknowledged", String.self, Int.self).copy()
        let (entries, _, _, times) = acknowledged.snapshot
        let old = entries.filter { times[$0.key]! < killed.addingTimeInterval(-1.5) }
        #expect(old.filter { stored[$0.key] != $0.value }.isEmpty, "entries acknowledged well before the kill are missing")
        await manager.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func aTornOrDamagedJournalTailIsCutAndSavedAndTheRestServed() async throws {
        let first = try ManagerProcess(extraArguments: ["--persist", "always"])
        let directory = first.stateDirectory
        let manager = try await first.connect()
        let entries = try await manager.dict("kept", String.self, Int.self)
        for index in 0..<10 { try await entries.set("k\(index)", index) }
        await manager.close()
        first.stop()
        // A crash mid-write: the last record's last bytes never reached the disk.
        let journal = try #require(
            FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasPrefix("journal.") }.map { directory + "/" + $0 })
        let size = try FileManager.default.attributesOfItem(atPath: journal)[.size] as! Int
        #expect(truncate(journal, off_t(size - 3)) == 0)

        let second = try ManagerProcess(extraArguments: ["--persist", "always"], stateDirectory: directory)
        defer { second.stop() }
        let after = try await second.connect()
        let stored = try await after.dict("kept", String.self, Int.self).copy()
        #expect(stored == Dictionary(uniqueKeysWithValues: (0..<9).map { ("k\($0)", $0) }))
        let saved = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".damaged-") }
        #expect(saved.count == 1)
        // The journal goes on from the valid prefix: a new write survives the next restart.
        try await after.dict("kept", String.self, Int.self).set("later", 1)
        await after.close()
        second.stop()
        let third = try ManagerProcess(extraArguments: ["--persist", "always"], stateDirectory: directory)
        let last = try await third.connect()
        let kept = try await last.dict("kept", String.self, Int.self)
        #expect(try await kept.copy().count == 10)
        let status = try await last.status()["persistence"]
        #expect(status?["mode"] == "always" && status?["failure"] == .null)
        // Eleven more writes, then a byte flipped in the journal's fourth record (after the
        // begin record): the three before it come back.
        for index in 0..<11 { try await kept.set("more\(index)", index) }
        let journalNow = try #require(status?["journal"]?.stringValue)
        await last.close()
        third.stop()
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: journalNow)))
        // Records are a 4-byte length, a 4-byte checksum and the body, after the 8-byte magic.
        var offset = 8
        for _ in 0..<4 { offset += 8 + bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) } }
        bytes[offset + 10] ^= 0x20  // inside the body of the record setting more3
        try Data(bytes).write(to: URL(fileURLWithPath: journalNow))

        let fourth = try ManagerProcess(extraArguments: ["--persist", "always"], stateDirectory: directory)
        defer { fourth.stop() }
        let final = try await fourth.connect()
        let survived = try await final.dict("kept", String.self, Int.self).copy()
        #expect(survived.count == 13, "the ten from the snapshot and the three records before the flipped byte")
        #expect(survived["more2"] == 2 && survived["more3"] == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".damaged-") }.count == 2)
        await final.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func aLockHeldAtAKillIsFreeAfterTheRestartAndItsNextHolderIsTold() async throws {
        let first = try ManagerProcess(extraArguments: ["--persist", "always"])
        let directory = first.stateDirectory
        let manager = try await first.connect()
        let before = try await manager.lock("leader").acquireGrant()
        kill(first.process.processIdentifier, SIGKILL)
        first.stop()
        await manager.close()

        let second = try ManagerProcess(extraArguments: ["--persist", "always"], stateDirectory: directory)
        defer { second.stop() }
        let after = try await second.connect()
        let grant = try await after.lock("leader").acquireGrant(timeout: 10)
        #expect(grant.acquired && grant.previousOwnerDied)
        #expect(grant.fencingToken > before.fencingToken, "a holder from before the restart is still refused by token")
        await after.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func byDefaultANamedDictAndAProxyPassedOnBeforeARestartComeBack() async throws {
        let first = try ManagerProcess()
        let directory = first.stateDirectory
        let before = try await first.connect()
        let config = try await before.dict("config", String.self, Int.self)
        try await config.set("a", 1)
        // A proxy as a child process receives it: with the manager's address and instance.
        let passedOn = try WireValueEncoder(userInfo: [CodingUserInfoKey(rawValue: "colony.process-transfer")!: true]).encode(config)
        let anonymous = try await before.list(nil, Int.self)
        let passedOnAnonymous = try WireValueEncoder(userInfo: [CodingUserInfoKey(rawValue: "colony.process-transfer")!: true]).encode(anonymous)
        await before.close()
        first.stop()

        let second = try ManagerProcess(extraArguments: ["--port", String(first.port)], stateDirectory: directory)
        defer { second.stop() }
        let after = try await second.connect()
        #expect(try await after.dict("config", String.self, Int.self).copy() == ["a": 1])
        let revived = try WireValueDecoder().decode(DictProxy<String, Int>.self, from: passedOn)
        #expect(try await revived.get("a") == 1)
        #expect {
            try WireValueDecoder().decode(ListProxy<Int>.self, from: passedOnAnonymous)
        } throws: { error in
            (error as? RemoteError)?.code == .noSuchObject && "\(error)".contains("restarted")
        }
        await after.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

