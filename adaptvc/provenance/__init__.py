"""Tying adapter versions to the code that trained them: the code's git commit in each adaptvc commit
(:mod:`.code`), ``adaptvc.lock`` naming the adapter a code commit produced (:mod:`.pin`), and the one safe way
adaptvc talks to git (:mod:`.gitcmd`)."""
