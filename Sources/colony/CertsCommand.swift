import ArgumentParser
import ColonyServer
import Foundation

/// `colony certs`: a CA and certificates for real deployments.
struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs", abstract: "Create a CA, and issue manager (server) and client certificates.",
        subcommands: [CreateCA.self, Issue.self])

    struct CreateCA: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ca", abstract: "Create a CA: <out>/ca.pem and <out>/ca-key.pem (0600).")

        @Option(help: "The directory to write to.")
        var out: String

        @Option(help: "The CA's common name.")
        var name = "Colony CA"

        func run() throws {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let caPath = out + "/ca.pem", keyPath = out + "/ca-key.pem"
            guard !FileManager.default.fileExists(atPath: keyPath) else {
                throw ValidationError("\(keyPath) exists; refusing to replace a CA (delete it first if you mean to)")
            }
            let authority = try CertificateAuthority.create(commonName: name)
            try StateDirectory.write(authority.certificatePEM(), to: caPath, mode: 0o644)
            try StateDirectory.write(authority.privateKeyPEM(), to: keyPath, mode: 0o600)
            print("wrote \(caPath) and \(keyPath)")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue", abstract: "Issue a certificate signed by a CA: <out>/<name>.pem and <out>/<name>-key.pem (0600).")

        @Option(help: "The directory holding ca.pem and ca-key.pem.")
        var caDir: String

        @Option(help: "The certificate's common name and file name.")
        var name: String

        @Option(help: "A DNS name the manager is reached by (repeatable).")
        var dns: [String] = []

        @Option(help: "An IP address the manager is reached by (repeatable).")
        var ip: [String] = []

        @Flag(help: "Issue a client certificate (for mutual TLS) instead of a manager certificate.")
        var client = false

        @Option(help: "The directory to write to (default: the CA directory).")
        var out: String?

        func validate() throws {
            guard !name.isEmpty, !name.contains("/") else { throw ValidationError("--name must be a plain file name") }
            if !client && dns.isEmpty && ip.isEmpty {
                throw ValidationError("a manager certificate needs at least one --dns or --ip name that clients connect to")
            }
        }

        func run() throws {
            let authority = try CertificateAuthority.load(
                certificatePEM: String(contentsOfFile: caDir + "/ca.pem", encoding: .utf8),
                privateKeyPEM: String(contentsOfFile: caDir + "/ca-key.pem", encoding: .utf8))
            let leaf = try authority.issue(commonName: name, dnsNames: dns, ipAddresses: ip, forServer: !client)
            let directory = out ?? caDir
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let certificatePath = directory + "/\(name).pem", keyPath = directory + "/\(name)-key.pem"
            try StateDirectory.write(leaf.certificatePEM, to: certificatePath, mode: 0o644)
            try StateDirectory.write(leaf.privateKeyPEM, to: keyPath, mode: 0o600)
            print("wrote \(certificatePath) and \(keyPath)")
        }
    }
}
