import ColonyWire
import ColonyTransport
import Foundation
import Logging
import NIOCore
import NIOPosix
import Threading
import Testing

@testable import ColonyServer

/// A temporary directory for one test's journal, removed at the end.
private struct JournalDirectory: ~Copyable {
    let path: String
    var journal: String { path + "/journal" }

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("colony-journal-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A new directory holding a copy of `other`'s files.
    static func copy(of other: borrowing JournalDirectory) throws -> JournalDirectory {
        let copy = try JournalDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: other.path) {
            try FileManager.default.copyItem(atPath: other.path + "/" + name, toPath: copy.path + "/" + name)
        }
        return copy
    }

    /// A store keeping its objects in this directory, with what it restored from it.
    func openStore(_ policy: DurabilityPolicy = .always, compactionBytes: Int = 64 << 20) throws -> (StoreHarness, Persistence, RestoreReport) {
        let harness = StoreHarness()
        let persistence = try Persistence(
            directory: path, policy: policy, compactionBytes: compactionBytes, store: harness.store, logger: Logger(label: "test"))
        return (harness, persistence, persistence.restored)
    }
}

@Suite struct JournalFileTests {
    @Test func recordsComeBackInOrderAfterTheWriterStops() throws {
        let directory = try JournalDirectory()
        for policy in DurabilityPolicy.allCases {
            try? FileManager.default.removeItem(atPath: directory.journal)
            let journal = try Journal(path: directory.journal, policy: policy)
            for index in 0..<1000 { journal.record(["call", .integer(index), "append", [.string(String(repeating: "x", count: index % 50))]]) }
            journal.stop()
            let contents = try JournalFile.read(path: directory.journal)
            #expect(contents.records.count == 1000)
            #expect(contents.records[999] == ["call", 999, "append", [.string(String(repeating: "x", count: 49))]])
            #expect(contents.damage == nil && contents.droppedBytes == 0)
            #expect(journal.statistics.records == 1000)
        }
    }

    @Test func anAnswerWaitsUntilItsRecordIsKept() throws {
        let directory = try JournalDirectory()
        let journal = try Journal(path: directory.journal, policy: .always)
        defer { journal.stop() }
        let kept = DispatchSemaphore(value: 0)
        journal.record(["delete", 1])
        #expect(journal.hasUnkeptRecords)
        journal.whenKept { kept.signal() }
        #expect(kept.wait(timeout: .now() + 10) == .success)
        #expect(!journal.hasUnkeptRecords)
        #expect(journal.statistics.syncs >= 1)
        #expect(try JournalFile.read(path: directory.journal).records == [["delete", 1]])
    }

    @Test func aPollingWriterTakesTheNextAnswerAndStopsWhenTold() throws {
        let directory = try JournalDirectory()
        // A poll far longer than the test's waits: only an answer or the stop can end it.
        let journal = try Journal(path: directory.journal, policy: .always, pollNanoseconds: 600_000_000_000)
        let kept = DispatchSemaphore(value: 0)
        for index in 0..<3 {
            journal.record(["delete", .integer(index)])
            journal.whenKept { kept.signal() }
            #expect(kept.wait(timeout: .now() + 10) == .success)
        }
        let stopped = DispatchSemaphore(value: 0)
        let stopper = Threading.Thread(name: "stopper", daemon: true) {
            journal.stop()
            stopped.signal()
        }
        try stopper.start()
        try #require(stopped.wait(timeout: .now() + 10) == .success)
        try stopper.join()
        #expect(try JournalFile.read(path: directory.journal).records.count == 3)
    }

    @Test func anEventLoopsWaitingAnswersLeaveOnlyOnceTheirOwnRecordsAreSynced() throws {
        let directory = try JournalDirectory()
        // Syncs complete when the test says so.
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let journal = try Journal(
            file: JournalFile.open(directory.journal, generation: 1), policy: .always,
            syncFile: { descriptor in
                started.signal()
                release.wait()
                return fdatasync(descriptor)
            })
        defer {
            release.signal()
            journal.stop()
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let answers = KeptAnswers(poller: BusyPoller.shared(by: loop), journal: journal)
        let sent = Threading.Queue<String>()
        func wait(_ name: String) throws {
            try loop.submit { answers.wait(through: journal.appendedCount) { try? sent.put(name) } }.wait()
        }
        journal.record(["delete", 1])
        try wait("first")
        #expect(started.wait(timeout: .now() + 10) == .success)  // the first record's sync runs
        journal.record(["delete", 2])
        try wait("second")
        release.signal()  // the first sync completes
        #expect(try sent.get(timeout: 10) == "first")
        #expect(started.wait(timeout: .now() + 10) == .success)  // the second's runs
        #expect(throws: (any Error).self) { try sent.get(timeout: 0.05) }  // and the second answer waits for it
        release.signal()
        #expect(try sent.get(timeout: 10) == "second")
    }

    @Test func aSyncThatFailsAtACutWritesNoRecordTwice() throws {
        let directory = try JournalDirectory()
        final class FailOnce: @unchecked Sendable {
            let lock = NSLock()
            var failed = false
            func shouldFail() -> Bool { lock.withLock { defer { failed = true }; return !failed } }
        }
        let once = FailOnce()
        let journal = try Journal(
            file: JournalFile.open(directory.path + "/journal.1", generation: 1), policy: .no,
            syncFile: { once.shouldFail() ? -1 : fdatasync($0) })
        journal.record(["delete", 1])
        journal.rotate(to: try JournalFile.open(directory.path + "/journal.2", generation: 2))
        journal.awaitRotation()
        journal.record(["delete", 2])
        journal.stop()
        #expect(once.failed)
        #expect(try JournalFile.read(path: directory.path + "/journal.1").records == [["delete", 1]])
        #expect(try JournalFile.read(path: directory.path + "/journal.2").records == [["delete", 2]])
    }

    @Test func aTornTailIsCutAndTheValidPrefixKept() throws {
        let directory = try JournalDirectory()
        let journal = try Journal(path: directory.journal, policy: .no)
        for index in 0..<10 { journal.record(["delete", .integer(index)]) }
        journal.stop()
        let whole = try Array(Data(contentsOf: URL(fileURLWithPath: directory.journal)))
        // Every cut inside the last record keeps exactly the nine before it.
        let lastStart = whole.count - (8 + (["delete", 9] as WireValue).encoded().readableBytes)
        for cut in (lastStart + 1)..<whole.count {
            let contents = try JournalFile.parse(Array(whole[..<cut]), path: "test")
            #expect(contents.records.count == 9)
            #expect(contents.validBytes == lastStart)
            #expect(contents.droppedBytes == cut - lastStart)
            #expect(contents.damage != nil)
        }
        // A torn header is an empty journal.
        #expect(try JournalFile.parse(Array("COLON".utf8), path: "test").records.isEmpty)
    }

    @Test func aFlippedByteEndsTheValidPrefixAtItsRecord() throws {
        let directory = try JournalDirectory()
        let journal = try Journal(path: directory.journal, policy: .no)
        for index in 0..<10 { journal.record(["delete", .integer(index)]) }
        journal.stop()
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: directory.journal)))
        let header = 8 + 8 + (["begin", 0] as WireValue).encoded().readableBytes
        let recordSize = (bytes.count - header) / 10
        bytes[header + recordSize * 4 + 9] ^= 0x40  // inside the fifth record's body
        let contents = try JournalFile.parse(bytes, path: "test")
        #expect(contents.records == (0..<4).map { ["delete", .integer($0)] })
        #expect(contents.damage?.contains("checksum") == true)
        #expect(contents.droppedBytes == recordSize * 6)
    }

    @Test func aFileThatIsNotAJournalIsRefused() throws {
        #expect(throws: JournalError.self) { try JournalFile.parse(Array("hello world".utf8), path: "test") }
    }

    @Test func checksumIsCRC32C() {
        // The standard check value of CRC-32C.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}

@Suite struct PersistenceTests {
    @Test func namedObjectsComeBackWithTheirContents() throws {
        let directory = try JournalDirectory()
        do {
            let (h, journal, _) = try directory.openStore()
            let dict = try h.new(.dict, "config", ["items": ["a": 1]])
            try h.call(dict, "setitem", "b", 2)
            try h.call(dict, "incr", "a", 10)
            try h.call(dict, "delitem", "b")
            let list = try h.new(.list, "jobs")
            try h.call(list, "extend", [3, 1, 2])
            try h.call(list, "sort")
            try h.call(list, "imul", 2)
            let namespace = try h.new(.namespace, "settings")
            try h.call(namespace, "setattr", "mode", "fast")
            let value = try h.new(.value, "counter", ["typecode": "i"])
            try h.call(value, "incr", 5)
            let array = try h.new(.array, "samples", ["typecode": "d", "size": 3])
            try h.call(array, "setitem", 1, 2.5)
            let set = try h.new(.set, "seen")
            try h.call(set, "update", [1, 2, 3])
            try h.call(set, "discard", 2)
            // Not kept: anonymous objects, and named objects of other types.
            let anonymous = try h.new(.list)
            try h.call(dict, "setitem", "nested", .objectRef(ObjectRef(type: .list, id: anonymous)))
            _ = try h.new(.barrier, "gate", ["parties": 2])
            // Failed calls change nothing and are not recorded.
            #expect(h.code(list, "remove", 99) == .valueError)
            journal.stop()
        }
        let (h, journal, report) = try directory.openStore()
        defer { journal.stop() }
        #expect(report.objects == 6)
        #expect(report.droppedReferences == 1)
        #expect(report.skipped == 0)
        #expect(h.store.count == 6)
        let dict = try h.new(.dict, "config")
        #expect(try h.call(dict, "copy") == ["a": 11, "nested": nil])
        #expect(try h.call(try h.new(.list, "jobs"), "copy") == [1, 2, 3, 1, 2, 3])
        #expect(try h.call(try h.new(.namespace, "settings"), "getattr", "mode") == "fast")
        #expect(try h.call(try h.new(.value, "counter"), "get") == 5)
        #expect(try h.call(try h.new(.array, "samples"), "copy") == [0.0, 2.5, 0.0])
        #expect(try h.call(try h.new(.set, "seen"), "copy") == [1, 3])
        // Restored ids are not given again.
        #expect(try h.new(.dict) > dict)
    }

    @Test func queuesKeepTheirItemsOrderAndUnfinishedTasks() throws {
        let directory = try JournalDirectory()
        do {
            let (h, journal, _) = try directory.openStore(.everysec)
            let fifo = try h.new(.joinableQueue, "work")
            for item in 1...5 { try h.call(fifo, "put", .integer(item)) }
            try h.call(fifo, "put_many", [6, 7])
            #expect(try h.call(fifo, "get") == 1)
            #expect(try h.call(fifo, "get_many", 2) == [2, 3])
            try h.call(fifo, "task_done")
            let priority = try h.new(.priorityQueue, "urgent")
            for item in [5, 1, 3, 1] { try h.call(priority, "put", .integer(item)) }
            #expect(try h.call(priority, "get") == 1)
            let lifo = try h.new(.lifoQueue, "stack")
            for item in ["a", "b", "c"] { try h.call(lifo, "put", .string(item)) }
            #expect(try h.call(lifo, "get") == "c")
            let closed = try h.new(.queue, "closed")
            try h.call(closed, "put", 1)
            try h.call(closed, "shutdown")
            journal.stop()
        }
        let (h, journal, _) = try directory.openStore()
        defer { journal.stop() }
        let fifo = try h.new(.joinableQueue, "work")
        #expect(try h.call(fifo, "get_many", 10) == [4, 5, 6, 7])
        // Seven put, one done: six unfinished.
        for _ in 0..<5 { try h.call(fifo, "task_done") }
        #expect(try h.call(fifo, "join", 0) == false)
        try h.call(fifo, "task_done")
        #expect(try h.call(fifo, "join", 0) == true)
        #expect(try h.call(try h.new(.priorityQueue, "urgent"), "get_many", 10) == [1, 3, 5])
        #expect(try h.call(try h.new(.lifoQueue, "stack"), "get_many", 10) == ["b", "a"])
        let closed = try h.new(.queue, "closed")
        #expect(h.code(closed, "put", 2) == .shutDown)
        #expect(try h.call(closed, "get") == 1)
    }

    @Test func aDeletedNameStaysDeletedAndCanBeMadeAgain() throws {
        let directory = try JournalDirectory()
        do {
            let (h, journal, _) = try directory.openStore()
            let first = try h.new(.list, "name", ["items": [1]])
            #expect(h.store.delete(name: "name"))
            let second = try h.new(.dict, "name")
            try h.call(second, "setitem", "k", "v")
            // A call on the deleted object's id after the delete is not replayed anywhere.
            #expect(first != second)
            journal.stop()
        }
        let (h, journal, report) = try directory.openStore()
        defer { journal.stop() }
        #expect(h.store.count == 1)
        #expect(report.skipped == 0)
        #expect(try h.call(try h.new(.dict, "name"), "copy") == ["k": "v"])
    }

    @Test func storedReferencesToKeptObjectsSurvive() throws {
        let directory = try JournalDirectory()
        do {
            let (h, journal, _) = try directory.openStore()
            let target = try h.new(.list, "target", ["items": [42]])
            let holder = try h.new(.dict, "holder")
            try h.call(holder, "setitem", "ref", .objectRef(ObjectRef(type: .list, id: target)))
            journal.stop()
        }
        let (h, journal, report) = try directory.openStore()
        defer { journal.stop() }
        #expect(report.droppedReferences == 0)
        let reference = try h.call(try h.new(.dict, "holder"), "getitem", "ref")
        guard case .objectRef(let target) = reference else {
            Issue.record("expected a reference, got \(reference)")
            return
        }
        #expect(try h.call(target.id, "copy") == [42])
    }

    /// Every kept type's contents, as a test compares them across restarts.
    private func contents(_ h: StoreHarness) throws -> [String: WireValue] {
        var seen: [String: WireValue] = [:]
        for (name, type) in [("d", ObjectType.dict), ("l", .list), ("s", .set), ("n", .namespace), ("v", .value), ("a", .array)] {
            let id = try h.new(type, name)
            seen[name] = try h.call(id, type == .namespace ? "attrs" : type == .value ? "get" : "copy")
        }
        for (name, type) in [("fifo", ObjectType.joinableQueue), ("lifo", .lifoQueue), ("priority", .priorityQueue)] {
            let id = try h.new(type, name)
            seen[name] = ["items": try h.call(id, "get_many", 100, false), "joined": try h.call(id, "join", 0)]
        }
        return seen
    }

    private func fill(_ h: StoreHarness) throws {
        try h.call(try h.new(.dict, "d"), "update", ["x": 1, "y": [1, 2]])
        try h.call(try h.new(.list, "l"), "extend", ["a", 2.5, nil])
        try h.call(try h.new(.set, "s"), "update", [3, 1, 2])
        try h.call(try h.new(.namespace, "n"), "setattr", "z", true)
        try h.call(try h.new(.value, "v", ["typecode": "d"]), "set", 1.5)
        try h.call(try h.new(.array, "a", ["typecode": "i", "items": [1, 2, 3]]), "setitem", 0, 7)
        let fifo = try h.new(.joinableQueue, "fifo")
        for item in 1...3 { try h.call(fifo, "put", .integer(item)) }
        _ = try h.call(fifo, "get")
        let lifo = try h.new(.lifoQueue, "lifo")
        for item in 1...3 { try h.call(lifo, "put", .integer(item)) }
        let priority = try h.new(.priorityQueue, "priority")
        // 1.0 and 1 are equal priorities, told apart on the wire: they leave in arrival order.
        for item: WireValue in [2, 1.0, 1.5, 1] { try h.call(priority, "put", item) }
    }

    @Test func aSnapshotAloneBringsBackWhatTheJournalDid() throws {
        let directory = try JournalDirectory()
        var expected: [String: WireValue] = [:]
        do {
            let (h, persistence, _) = try directory.openStore()
            try fill(h)
            persistence.stop()
            // Read through a copy: reading the queues empties them.
            let (copy, other, _) = try JournalDirectory.copy(of: directory).openStore()
            expected = try contents(copy)
            other.stop()
        }
        // The start compacted the journal into the snapshot; the next start reads that alone.
        for _ in 0..<2 {
            let (h, persistence, _) = try directory.openStore()
            persistence.stop()
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(files.filter { $0.hasPrefix("journal.") }.count == 1)
            _ = h
        }
        let (h, persistence, _) = try directory.openStore()
        defer { persistence.stop() }
        #expect(try contents(h) == expected)
        #expect(expected["priority"]?["items"] == [1.0, 1, 1.5, 2])
        #expect(expected["lifo"]?["items"] == [3, 2, 1])
        #expect(expected["fifo"]?["joined"] == false)  // three put, none done
    }

    @Test func aCompactionWhileWritingLosesNothing() throws {
        let directory = try JournalDirectory()
        do {
            let (h, persistence, _) = try directory.openStore(.no, compactionBytes: 1)
            let list = try h.new(.list, "log")
            let group = DispatchGroup()
            for writer in 0..<4 {
                DispatchQueue.global().async(group: group) {
                    for index in 0..<500 { _ = try? h.call(list, "append", .string("w\(writer)-\(index)")) }
                }
            }
            for _ in 0..<20 { try persistence.compact() }
            group.wait()
            try persistence.compact()
            try h.call(list, "append", "last")
            persistence.stop()
        }
        let (h, persistence, _) = try directory.openStore()
        defer { persistence.stop() }
        let items = try h.call(try h.new(.list, "log"), "copy").arrayValue ?? []
        #expect(items.count == 2001)
        #expect(items.last == "last")
        // Each writer's items in its order.
        for writer in 0..<4 {
            let mine = items.compactMap { $0.stringValue }.filter { $0.hasPrefix("w\(writer)-") }
            #expect(mine == (0..<500).map { "w\(writer)-\($0)" })
        }
    }

    @Test func aJournalTheSnapshotAlreadyHoldsIsNotReplayed() throws {
        let directory = try JournalDirectory()
        let stale: String
        do {
            let (h, persistence, _) = try directory.openStore()
            let dict = try h.new(.dict, "d")
            try h.call(dict, "setitem", "k", 1)
            stale = persistence.journal.path
            let kept = try Data(contentsOf: URL(fileURLWithPath: stale))
            try persistence.compact()
            try h.call(dict, "setitem", "k", 2)
            persistence.stop()
            // A crash after the snapshot's rename, before the old journal's removal.
            try kept.write(to: URL(fileURLWithPath: stale))
        }
        let (h, persistence, _) = try directory.openStore()
        defer { persistence.stop() }
        #expect(try h.call(try h.new(.dict, "d"), "getitem", "k") == 2)
        #expect(!FileManager.default.fileExists(atPath: stale))
    }

    @Test func aDamagedSnapshotIsRefused() throws {
        let directory = try JournalDirectory()
        do {
            let (h, persistence, _) = try directory.openStore()
            try h.call(try h.new(.dict, "d"), "setitem", "k", "value")
            try persistence.compact()
            persistence.stop()
        }
        let snapshot = PersistenceFiles(directory: directory.path).snapshot
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: snapshot)))
        bytes[bytes.count - 2] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: snapshot))
        #expect {
            _ = try directory.openStore()
        } throws: { error in
            "\(error)".contains("snapshot") && "\(error)".contains("damaged")
        }
    }

    @Test func aLockHeldWhenTheManagerDiedIsFreeAfterwardAndTokensGoOnRising() throws {
        let directory = try JournalDirectory()
        var lastToken: UInt64 = 0
        do {
            let (h, persistence, _) = try directory.openStore()
            let held = try h.new(.lock, "held")
            let free = try h.new(.rlock, "free")
            lastToken = try LockGrant.decode(try h.call(held, "acquire", 1)).fencingToken
            _ = try h.call(free, "acquire", 1)
            try h.call(free, "release", 1)
            persistence.stop()  // the manager dies with "held" held
        }
        for restart in 0..<2 {
            let (h, persistence, _) = try directory.openStore()
            let held = try h.new(.lock, "held")
            let grant = try LockGrant.decode(try h.call(held, "acquire", 2))
            #expect(grant.acquired)
            #expect(grant.previousOwnerDied == (restart == 0), "told once, by the first grant after the restart")
            #expect(grant.fencingToken > lastToken)
            lastToken = grant.fencingToken
            try h.call(held, "release", 2)
            let free = try h.new(.rlock, "free")
            #expect(try LockGrant.decode(try h.call(free, "acquire", 2)).previousOwnerDied == false)
            try h.call(free, "release", 2)
            persistence.stop()
        }
    }

    @Test func aSemaphoreComesBackWithItsHeldPermitsFreeAndAnEventSetOrClear() throws {
        let directory = try JournalDirectory()
        do {
            let (h, persistence, _) = try directory.openStore()
            let bounded = try h.new(.boundedSemaphore, "slots", ["value": 2])
            _ = try h.call(bounded, "acquire", 1)  // held when the manager dies
            let counting = try h.new(.semaphore, "tickets", ["value": 0])
            try h.call(counting, "release", 1, 3)  // Python's release(n): three permits
            try h.call(try h.new(.event, "ready"), "set")
            let cleared = try h.new(.event, "done")
            try h.call(cleared, "set")
            try h.call(cleared, "clear")
            persistence.stop()
        }
        for _ in 0..<2 {  // from the journal, then from the snapshot alone
            let (h, persistence, _) = try directory.openStore()
            let bounded = try h.new(.boundedSemaphore, "slots")
            #expect(try h.call(bounded, "value") == 2)
            #expect(try h.call(try h.new(.semaphore, "tickets"), "value") == 3)
            #expect(try h.call(try h.new(.event, "ready"), "is_set") == true)
            #expect(try h.call(try h.new(.event, "done"), "is_set") == false)
            persistence.stop()
        }
        let (h, persistence, _) = try directory.openStore()
        defer { persistence.stop() }
        let grant = try LockGrant.decode(try h.call(try h.new(.boundedSemaphore, "slots"), "acquire", 2))
        #expect(grant.previousOwnerDied, "a holder's permit came back when the manager died")
        #expect(grant.fencingToken > LockCore.restartTokenGap)
    }

    @Test func recordsNoManagerWritesAreSkippedAndCountedNotTrusted() throws {
        let store = ObjectStore()
        let report = store.restore([
            ["create", 5, 1, "d", nil],
            ["create", 5, 2, "other", nil],  // the same id twice
            ["create", 6, 17, "pool", nil],  // a type that is not kept
            ["call", 5, "setitem", ["k", .objectRef(ObjectRef(type: .list, id: 99))]],  // a reference to nothing
            ["call", 7, "setitem", ["k", 1]],  // no such object
            ["effect", 5, "push", 1],  // a dict has no effects
            ["what", 5],
            ["create", 8, 7, "q", ["maxsize": 0]],
            ["effect", 8, "push", "x"],
            ["effect", 8, "pop", -1],  // a negative count of items
            ["create", 9, 10, "l", nil],
            ["effect", 9, "taken", .integer(UInt64.max)],  // a token that later grants would overflow
        ])
        #expect(report.objects == 3)
        #expect(report.skipped == 7)
        #expect(report.droppedReferences == 1)
        #expect(store.count == 3)
        #expect(try store.call(object: 5, method: "copy", arguments: []) == ["k": nil])
        #expect(try store.call(object: 8, method: "qsize", arguments: []) == 1)
        #expect(try store.call(object: 9, method: "locked", arguments: []) == false)
    }
}

