-- The files each package installed, where the scanner lists them (Trivy's
-- `InstalledFiles` for OS packages). The correlation pass (core/src/correlation.rs)
-- uses them to tell which package a live process's executable belongs to when the
-- agent did not report the package itself.
--
-- Keyed by path first: the pass looks files up by the executables that run.

CREATE TABLE package_files (
    path       text   NOT NULL,
    package_id bigint NOT NULL REFERENCES packages (id),
    PRIMARY KEY (path, package_id)
);
