"""Commands built on the runtime; the runtime never imports them.

``standin``      a stand-in flow engine on loopback (`flow-bridge engine`, `flow-bridge call`).
``conformance``  drive any handler as a black box and grade it (`flow-bridge conformance`).
``scaffold``     write a plugin project from templates (`flow-bridge init`).
``package``      check a project and write the archive the platform takes (`flow-bridge package`).

This module imports none of them, so that importing one tool does not load the others.
"""
