import ColonyWire
import Foundation
import NIOCore
import Testing

@testable import ColonyServer

/// With `--persist always`, an answer waits for the journal records it shows, not for every
/// record: a read of a dict key kept long ago leaves while another key's change is being synced.
@Suite struct AnswerShowsTests {
    /// A journal whose syncs succeed until `hold` and then wait for `release`.
    final class SyncGate: @unchecked Sendable {
        private let condition = NSCondition()
        private var held = false

        func hold() { condition.withLock { held = true } }
        func release() {
            condition.withLock {
                held = false
                condition.broadcast()
            }
        }
        func sync(_ descriptor: Int32) -> Int32 {
            condition.withLock {
                while held { condition.wait() }
            }
            return fdatasync(descriptor)
        }
    }

    /// The session's actions for one request, and the record its answer says it shows.
    func run(_ session: inout ManagerSession, _ request: Request, id: UInt64) -> (shows: UInt64?, answer: SessionAction?) {
        var shows: UInt64?
        var answer: SessionAction?
        for frame in Message(kind: .request, requestID: id, body: request.wireValue.encoded()).frames(maxBodySize: 1 << 20) {
            for action in session.receive(frame, now: 2) {
                switch action {
                case .answerShows(let record): shows = record
                case .answer, .answerEncoded: answer = action
                default: break
                }
            }
        }
        return (shows, answer)
    }

    func keptThrough(_ journal: Journal, _ record: UInt64) -> Bool {
        let kept = DispatchSemaphore(value: 0)
        journal.whenKept(through: record) { kept.signal() }
        return kept.wait(timeout: .now() + 10) == .success
    }

    @Test func aReadShowsOnlyTheChangesOfWhatItRead() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("colony-shows-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gate = SyncGate()
        let journal = try Journal(file: JournalFile.open(directory + "/journal.1", generation: 1), policy: .always, syncFile: gate.sync)
        defer {
            gate.release()
            journal.stop()
        }
        let context = TestContext()
        context.store.persist(to: journal)
        var session = try SessionTests().openSession(context)

        guard case .answer(_, .success(let made))? = run(&session, .new(type: .dict, name: "kept", options: .null), id: 1).answer,
            let dict = made.objectRefValue
        else { Issue.record("no dict"); return }
        let anonymous = try #require(SessionTests().request(&session, .new(type: .dict, name: nil, options: .null), id: 2).value().objectRefValue)
        func call(_ object: ObjectRef, _ method: String, _ arguments: [WireValue], id: UInt64) -> UInt64? {
            run(&session, .call(object: object.id, method: method, arguments: arguments), id: id).shows
        }

        // A change shows its own record.
        let first = try #require(call(dict, "setitem", ["a", 1], id: 3))
        #expect(first == journal.appendedCount)
        #expect(keptThrough(journal, first))

        // The next change is not synced yet...
        gate.hold()
        let second = try #require(call(dict, "setitem", ["b", 2], id: 4))
        #expect(second > first && journal.keptCount < second)
        // ...and a read of the other key shows only what was kept, so it leaves at once.
        #expect(call(dict, "getitem", ["a"], id: 5) == first)
        #expect(call(dict, "get", ["a"], id: 6) == first)
        #expect(try #require(call(dict, "contains", ["missing"], id: 7)) < first)
        // A read of the changed key, or of the whole dict, shows the change.
        #expect(call(dict, "getitem", ["b"], id: 8) == second)
        #expect(call(dict, "len", [], id: 9) == second)
        #expect(call(dict, "items", [], id: 10) == second)
        // An object nothing of which is kept shows nothing.
        #expect(call(anonymous, "setitem", ["x", 1], id: 11) == 0)
        // A change not tied to one key shows itself to every key read after it.
        let cleared = try #require(call(dict, "clear", [], id: 12))
        #expect(call(dict, "get", ["a"], id: 13) == cleared)

        // What does not say waits for everything: an error, a batch, a request that is no call.
        let failed = run(&session, .call(object: dict.id, method: "getitem", arguments: ["a"]), id: 14)
        #expect(failed.shows == nil)
        guard case .answer(_, .failure)? = failed.answer else { Issue.record("getitem of a cleared key succeeded"); return }
        #expect(run(&session, .batch([.call(object: dict.id, method: "len", arguments: [])]), id: 15).shows == nil)
        #expect(run(&session, .attach(object: dict.id), id: 16).shows == nil)
    }

    @Test func keyRecordsForgetKeysOnceKeptAndKeepTheRest() {
        var records = KeyRecords(since: 5)
        #expect(records.shown(by: "getitem", ["never"]) == 5)
        #expect(records.shown(by: "keys", []) == nil)
        for index in 0..<(KeyRecords.minimumForgetAt - 1) {
            records.changed("setitem", [.integer(Int64(index)), 0], record: UInt64(10 + index), kept: 0)
        }
        #expect(records.shown(by: "get", [3]) == 13)
        // The next change fills the table: keys kept by record 500 are forgotten (they show
        // no more than the kept record), the others keep their records.
        records.changed("setitem", ["late", 1], record: 2000, kept: 500)
        #expect(records.shown(by: "get", [3]) == 5)
        #expect(records.shown(by: "get", [600]) == 610)
        #expect(records.shown(by: "contains", ["late"]) == 2000)
        records.changed("update", [["a": 1]], record: 2001, kept: 500)
        #expect(records.shown(by: "get", [600]) == 2001)
    }
}

@Suite struct ShownRecordsTests {
    @Test func gatheredAnswersWaitForWhatTheyShowWhenEverySaid() {
        var shown = ShownRecords()
        shown.announce(7)
        shown.performed(answerBytes: 10)
        shown.announce(3)
        shown.performed(answerBytes: 5)
        #expect(shown.flush(gathered: 15, appended: 40) == 7)
        // Afresh after a flush: nothing said, so everything so far.
        shown.performed(answerBytes: 8)
        #expect(shown.flush(gathered: 8, appended: 41) == 41)
    }

    @Test func anAnswerThatDidNotSayMakesTheGatheredOnesWaitForEverything() {
        var shown = ShownRecords()
        shown.announce(7)
        shown.performed(answerBytes: 10)
        shown.performed(answerBytes: 4)  // an error answer: said nothing
        #expect(shown.flush(gathered: 14, appended: 40) == 40)
        // Bytes written by something that is not an answer (a frame, an offloaded answer's
        // bytes) count as not said, and an announcement does not carry past them.
        shown.announce(5)
        shown.performed(answerBytes: 0)
        shown.performed(answerBytes: 6)
        #expect(shown.flush(gathered: 6, appended: 42) == 42)
        shown.announce(5)
        shown.performed(answerBytes: 6)
        #expect(shown.flush(gathered: 9, appended: 43) == 43)
    }
}
