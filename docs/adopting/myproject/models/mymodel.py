from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base


class Page(Base):
    __tablename__ = "pages"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
