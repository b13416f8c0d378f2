import ColonyWire
import Foundation
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

    /// A store recording into this directory's journal, with what it restored from it.
    func openStore(_ policy: DurabilityPolicy = .always) throws -> (StoreHarness, Journal, RestoreReport) {
        let harness = StoreHarness()
        let report = harness.store.restore(try JournalFile.read(path: journal).records)
        let journal = try Journal(path: journal, policy: policy)
        harness.store.persist(to: journal)
        return (harness, journal, report)
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
        let recordSize = (bytes.count - 8) / 10
        bytes[8 + recordSize * 4 + 9] ^= 0x40  // inside the fifth record's body
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
            _ = try h.new(.lock, "mutex")
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
}
