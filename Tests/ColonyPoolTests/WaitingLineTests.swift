@testable import ColonyWorker
import Testing

/// The line of assignments a worker node holds for its slots (`WaitingLine`).
@Suite struct WaitingLineTests {
    @Test func takesInOrderAndPutsUnreachedBackAtTheFront() {
        var line = WaitingLine<Int>()
        for value in 1...5 { line.append(value) }
        #expect(line.popFirst() == 1)
        #expect(line.popFirst() == 2)
        line.putBack([1, 2])
        #expect((0..<5).compactMap { _ in line.popFirst() } == [1, 2, 3, 4, 5])
        #expect(line.popFirst() == nil)
        #expect(line.count == 0)
    }

    @Test func removesByMatchAndCountsWhatItRemoved() {
        var line = WaitingLine<Int>()
        for value in 1...10 { line.append(value) }
        _ = line.popFirst()
        #expect(line.removeFirst { $0 == 1 } == nil)  // already taken
        #expect(line.removeFirst { $0 == 4 } == 4)
        #expect(line.removeAll { $0.isMultiple(of: 2) } == 4)  // 2, 6, 8, 10
        #expect((0..<10).compactMap { _ in line.popFirst() } == [3, 5, 7, 9])
    }

    /// Long runs of taking from the front, as a busy node does, keep the order and every
    /// element, across the moments the line drops what it already gave out.
    @Test func aLongLineKeepsItsOrderAsItIsTakenAndFilled() {
        var line = WaitingLine<Int>()
        var next = 0
        var expected = 0
        for round in 0..<1000 {
            for _ in 0..<(round % 7 + 1) {
                line.append(next)
                next += 1
            }
            for _ in 0..<(round % 5 + 1) {
                guard let first = line.popFirst() else { break }
                #expect(first == expected)
                expected += 1
            }
            #expect(line.count == next - expected)
        }
    }
}
