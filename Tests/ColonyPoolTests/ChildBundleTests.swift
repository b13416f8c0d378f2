import ColonyWire
@testable import ColonyWorker
import Testing

/// How a worker node follows a bundle its worker process runs (`ChildBundle`), and what the
/// assignments not reported get when the process ends first.
@Suite struct ChildBundleTests {
    /// The progress word of a process running assignment `assignment` with `calls` of it done.
    private func progress(_ assignment: Int, _ calls: Int) -> Int { assignment << 32 | calls }

    private func failure(_ report: WorkerReport) -> TaskFailure? {
        if case .failure(let failure) = report { failure } else { nil }
    }

    @Test func reportsArriveInOrderAndNoMoreThanTheBundleHolds() {
        var bundle = ChildBundle(ids: [10, 11, 12])
        let first = bundle.reported(2)
        #expect(first == 0..<2)
        #expect(!bundle.isComplete)
        let tooMany = bundle.reported(2)
        let none = bundle.reported(0)
        #expect(tooMany == nil && none == nil)
        let last = bundle.reported(1)
        #expect(last == 2..<3)
        #expect(bundle.isComplete)
    }

    @Test func aDeathBlamesOnlyTheRunningAssignmentAndTheOthersRunAgain() {
        var bundle = ChildBundle(ids: [10, 11, 12, 13])
        _ = bundle.reported(1)
        // Running the third with two of its calls done; the second finished but was not sent.
        let outcome = bundle.ended(progress: progress(2, 2), status: "signal 9")
        #expect(outcome.answered.map(\.index) == [2])
        let blamed = failure(outcome.answered[0].report)
        #expect(blamed?.lost == true)
        #expect(blamed?.index == 2)
        #expect(blamed?.errorType == "WorkerProcessDied")
        #expect(blamed?.message.contains("signal 9") == true)
        #expect(outcome.unreached == [1, 3])
    }

    @Test func aDeathBeforeTheBundleStartedOrBetweenAssignmentsBlamesNobody() {
        let fresh = ChildBundle(ids: [10, 11])
        let unstarted = fresh.ended(progress: ChildBundle.notStarted, status: "status 1")
        #expect(unstarted.answered.isEmpty)
        #expect(unstarted.unreached == [0, 1])

        var halfway = ChildBundle(ids: [10, 11])
        _ = halfway.reported(1)
        // Its word still names the first, already reported: it died before taking the second.
        let between = halfway.ended(progress: progress(0, 1), status: "signal 9")
        #expect(between.answered.isEmpty)
        #expect(between.unreached == [1])
    }

    @Test func anAbortKillsOnlyForTheAssignmentRunningOrAboutToStart() {
        var bundle = ChildBundle(ids: [10, 11, 12])
        // Not started yet: the first counts as running.
        let second = bundle.abort(11, progress: ChildBundle.notStarted)
        let first = bundle.abort(10, progress: ChildBundle.notStarted)
        #expect(!second && first)
        let outcome = bundle.ended(progress: ChildBundle.notStarted, status: "signal 9")
        #expect(outcome.answered.map(\.index) == [0])
        #expect(failure(outcome.answered[0].report)?.errorType == "Cancelled")
        #expect(outcome.unreached == [1, 2])

        var running = ChildBundle(ids: [10, 11, 12])
        _ = running.reported(1)
        let reported = running.abort(10, progress: progress(1, 0))
        // Behind the running one: it runs, and the manager ignores its answer.
        let behind = running.abort(12, progress: progress(1, 0))
        let current = running.abort(11, progress: progress(1, 0))
        #expect(!reported && !behind && current)
        let killed = running.ended(progress: progress(1, 0), status: "signal 9")
        #expect(killed.answered.map(\.index) == [1])
        #expect(failure(killed.answered[0].report)?.errorType == "Cancelled")
        #expect(killed.unreached == [2])
    }
}
