# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Study: the images and reports that share a StudyInstanceUID (through per-request DataLoaders)."""

from __future__ import annotations

import strawberry
from strawberry import Info

from medsearch_api.context import Context
from medsearch_api.schema.image import Image
from medsearch_api.schema.report import Report


@strawberry.type(description="A study: images and reports that share a StudyInstanceUID.")
class Study:
    uid: strawberry.ID

    @classmethod
    def of(cls, uid: str | None) -> Study | None:
        return cls(uid=strawberry.ID(uid)) if uid else None

    @strawberry.field
    async def images(self, info: Info[Context, None]) -> list[Image]:
        return [Image.from_record(i) for i in await info.context.loaders.images_by_study.load(str(self.uid))]

    @strawberry.field
    async def reports(self, info: Info[Context, None]) -> list[Report]:
        return [Report.from_record(r) for r in await info.context.loaders.reports_by_study.load(str(self.uid))]

    @strawberry.field(description="The first report of the study (by report id).")
    async def report(self, info: Info[Context, None]) -> Report | None:
        found = await info.context.loaders.reports_by_study.load(str(self.uid))
        return Report.from_record(found[0]) if found else None
